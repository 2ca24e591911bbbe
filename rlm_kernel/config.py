"""Every setting of a run, declared once, as traitlets (Jupyter's configuration system).

Each trait below is the single declaration of its setting: default, help, validation, and tags
(traitlets metadata) that say where else it appears. Everything else is derived from these tags,
never listed by hand:

``per_run``   may differ per query: an option of ``%%rlm`` and of ``rlm-kernel run``
              (:func:`add_setting_options`), applied by :meth:`RLMConfig.copy` per run.
``cli``       a flag of ``rlm-kernel run`` (every ``per_run`` setting is one too).
``client``    part of the model client's identity: the kernel keeps one client per distinct set
              of these values (:meth:`RLMConfig.client_key`), so changing one (``%rlm config
              prices=...``) takes effect on the next run.
``replay``    False for settings of the endpoint, not the trajectory (base URL, limits, prices):
              replay and resume take every other setting from the recorded run
              (:meth:`RLMConfig.replayable`).
``env``       the environment variable that gives the default: ``OPENAI_API_KEY`` and
              ``OPENAI_BASE_URL`` by the OpenAI convention, ``RLM_<NAME>`` for every other setting.
``secret``    never recorded, displayed or logged (:func:`redact` scrubs it from text).

Settings come from (lowest first) the defaults, the environment, ``c.RLMConfig.*`` /
``c.RLMKernel.*`` in Jupyter config files, ``%rlm config name=value``, and keyword arguments.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
from collections.abc import Iterator
from typing import Any

from traitlets import Bool, Dict, Float, Integer, TraitError, TraitType, Unicode, validate
from traitlets.config import Configurable

from .errors import ConfigError

__all__ = [
    "RLMConfig",
    "redact",
    "redact_json",
    "remember_secret",
    "without_userinfo",
    "SCRIPTED_ROOT",
    "SCRIPTED_SUB",
    "add_setting_options",
    "options_given",
    "setting_traits",
]

SCRIPTED_ROOT = "scripted-root"
SCRIPTED_SUB = "scripted-sub"
SYSTEM_ROLES = ("auto", "system", "user")
_known_secrets: set[str] = set()


def redact(text: str) -> str:
    """Replace every secret this process has seen with '***': whole, and the parts providers echo
    ("sk-test-01...ECRET": a prefix of 8+ characters, a suffix of 6+ of a long key).

    The spans of every secret are found in the original text first and replaced together, so the
    result does not depend on the order secrets were learnt (one key's tail inside another key
    must not leave the rest of that key behind)."""
    if not _known_secrets or not isinstance(text, str):
        return text
    spans: list[tuple[int, int]] = []
    for secret in _known_secrets:
        if len(secret) < 8:
            continue
        if len(secret) < 16:
            spans.extend((at, at + len(secret)) for at in _find_all(text, secret))
            continue
        for at in _find_all(text, secret[:8]):  # each echo of the head, as far as it matches
            n = 8
            while n < len(secret) and at + n < len(text) and text[at + n] == secret[n]:
                n += 1
            spans.append((at, at + n))
        for at in _find_all(text, secret[-6:]):  # each echo of the tail, as far back as it matches
            start, n = at, 6
            while n < len(secret) and start > 0 and text[start - 1] == secret[-n - 1]:
                start, n = start - 1, n + 1
            spans.append((start, at + 6))
    if not spans:
        return text
    spans.sort()
    parts, at = [], 0
    for start, end in spans:
        if end <= at:
            continue
        if start >= at:
            parts.append(text[at:start])
            parts.append("***")
        at = end
    parts.append(text[at:])
    return "".join(parts)


def _find_all(text: str, needle: str) -> Iterator[int]:
    at = text.find(needle)
    while at >= 0:
        yield at
        at = text.find(needle, at + 1)


def redact_json(value: Any) -> Any:
    """Every string in a JSON-like value (outputs, records) through :func:`redact`; the value
    itself when no secret is known (the common case costs nothing)."""
    if not _known_secrets:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value


def remember_secret(secret: str) -> None:
    """Make :func:`redact` hide ``secret`` (an API key, a password in a URL) from now on."""
    if secret:
        _known_secrets.add(secret)


class FiniteFloat(Float):
    """A float that must be a real number (``nan``/``inf`` are refused with a clear message)."""

    def validate(self, obj: Any, value: Any) -> float:
        value = super().validate(obj, value)
        if not math.isfinite(value):
            raise TraitError(f"{self.name} must be a finite number, not {value}")
        return value


def _run(trait: TraitType, **tags: Any) -> TraitType:
    """A per-run setting (a ``%%rlm`` option and an ``rlm-kernel run`` flag)."""
    return trait.tag(config=True, per_run=True, cli=True, **tags)


def _setting(trait: TraitType, **tags: Any) -> TraitType:
    return trait.tag(config=True, **tags)


class RLMConfig(Configurable):
    """Models, endpoint, budgets and limits of RLM runs (see the module docstring for the tags).

    Long because every setting is declared here once, with its help and tags; the options of
    ``%%rlm`` and ``rlm-kernel run``, the client key and the replay rules are derived from it."""

    # -- models and endpoint ---------------------------------------------------------------------
    model = _run(Unicode("", help="Root model name. Empty: the scripted model."))
    sub_model = _run(Unicode("", help="Model for llm()/llm_batch(). Empty: same as model."))
    models = _run(Unicode(
        "", help="Models per depth, comma-separated: root,depth1,depth2,... (sub-calls and "
                 "sub-RLMs at depth d use entry d; the last entry serves deeper levels). Set, it "
                 "replaces model/sub_model."))
    base_url = _setting(Unicode(
        "", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."),
        cli=True, client=True, replay=False, env="OPENAI_BASE_URL")
    api_key = _setting(Unicode("", help="API key. Never displayed or recorded."),
                       client=True, replay=False, env="OPENAI_API_KEY", secret=True)

    # -- budgets of a run tree -------------------------------------------------------------------
    max_steps = _run(Integer(30, min=1, help="Root-model steps per run."))
    max_depth = _run(Integer(1, min=0, help="Recursion depth: rlm() at this depth becomes llm()."))
    max_subcalls = _run(Integer(0, min=0, help="Sub-calls per run tree (0: unlimited)."))
    max_tokens = _run(Integer(0, min=0, help="Prompt+completion tokens per run tree (0: unlimited)."))
    max_cost = _run(FiniteFloat(0.0, min=0.0, help="USD per run tree from `prices` (0: unlimited)."))
    max_wall_time = _run(FiniteFloat(0.0, min=0.0, help="Seconds per run (0: unlimited)."))
    step_timeout = _run(FiniteFloat(300.0, min=0.0, help="Seconds one step's code may run (0: no limit)."))

    # -- the model client ------------------------------------------------------------------------
    concurrency = _run(Integer(64, min=1, help=(
        "Most model calls in flight at once. The client halves it when the endpoint answers "
        "HTTP 429 and climbs back by one per round of successes.")),
                       client=True, replay=False)
    requests_per_minute = _setting(Integer(0, min=0, help="Rate limit on requests (0: none)."),
                                   cli=True, client=True, replay=False)
    tokens_per_minute = _setting(Integer(
        0, min=0, help="Rate limit on estimated prompt tokens (0: none)."),
        cli=True, client=True, replay=False)
    max_retries = _setting(Integer(
        4, min=0, help="Retries (with backoff) of a call on 429/5xx/timeouts/connection errors."),
        cli=True, client=True, replay=False)
    call_timeout = _setting(FiniteFloat(
        120.0, min=0.001, help="Seconds per model request attempt."),
        cli=True, client=True, replay=False)
    fast_transport = _setting(Bool(
        True, help="HTTP/1.1 keep-alive transport tuned for many parallel calls; False: httpx2's own."),
        client=True, replay=False)
    temperature = _setting(FiniteFloat(
        -1.0, help="Sampling temperature (negative: the provider's default)."),
        cli=True, client=True)
    root_max_tokens = _setting(Integer(
        8192, min=0,
        help="Most tokens a root reply may have (sent as max_tokens, or max_completion_tokens where "
             "the provider asks for that); a reply cut there runs only its complete code blocks. "
             "0: no bound (on llama.cpp that means to the end of the window)."),
        cli=True, client=True)
    sub_max_tokens = _setting(Integer(
        4096, min=0,
        help="Most tokens a sub-call's answer (llm, llm_batch) may have; 0: no bound."),
        cli=True, client=True)
    stream = _setting(Bool(
        True, help="Stream replies: a Stop, interrupt, timeout or spent budget closes the stream, "
                   "which frees the server at once, and the root model's prose shows as it is "
                   "written. False: one JSON answer per call."),
        cli=True, client=True, replay=False)
    system_role = _setting(Unicode(
        "auto", help="Where the REPL instructions go: 'system' (a system message), 'user' (the "
                     "first user message, for chat templates that drop system messages, e.g. "
                     "llama-cpp-python's gemma format), or 'auto' (system, moved to the user "
                     "message when the first call's usage shows the server dropped it)."),
        cli=True)
    context_window = _setting(Integer(
        0, min=0,
        help="Tokens the root model's context window holds. 0: learn it from the server's model "
             "listing or from its first context-overflow error. Older steps are compacted "
             "before the history outgrows it."),
        cli=True, replay=False)
    reasoning_effort = _run(Unicode(
        "", help="reasoning_effort sent to reasoning models (low, medium, high...; empty: not "
                 "sent)."), client=True)
    reasoning_model = _setting(Unicode(
        "auto", help="Whether the models refuse sampling parameters such as temperature "
                     "(OpenAI's o-series and gpt-5): auto (by name), yes, no."),
        cli=True, client=True)
    prices = _setting(Dict(
        {}, help='USD per 1M tokens: {"model": {"prompt": 2.5, "completion": 10, "cached": 1.25}}.'),
        client=True, replay=False)
    cache = _setting(Bool(True, help="Reuse responses for identical (model, messages, params)."),
                     client=True, replay=False)
    scripted_latency = _setting(FiniteFloat(
        0.0, min=0.0, help="Injected latency (s) of the embedded scripted model."),
        client=True, replay=False)

    # -- what the model sees and what the notebook keeps -----------------------------------------
    output_chars = _setting(Integer(
        20_000, min=0, help="Step output shown to the root model (head+tail; 0: all of it)."))
    sub_window = _setting(Integer(
        100_000, min=1, help="Characters the root model is told a sub-call can read."))
    record_prompt_chars = _setting(Integer(
        2_000, min=0,
        help="Sub-call prompts up to this length are kept whole in notebooks; longer: preview+hash."))
    keep_prompt_chars = _setting(Integer(
        64_000_000, min=0,
        help="Full sub-call prompts kept in memory this session, newest first (for an unedited "
             "%%llm --call cell to re-send one exactly); 0 keeps none."), replay=False)
    image_max_edge = _run(Integer(
        1024, min=0, help="Longest side, in pixels, of an image sent to a sub-model: larger ones "
                          "are sized down first (0: sent as given)."))
    image_detail = _setting(Unicode(
        "", help="The image_url 'detail' of sub-call images: auto, low or high (empty: not sent, "
                 "the endpoint's default)."), cli=True)
    keep_image_bytes = _setting(Integer(
        128_000_000, min=0,
        help="Bytes of sub-call images kept in memory this session, newest first (for a %%llm "
             "--call cell to re-send them); 0 keeps none."), replay=False)
    mode = _run(Unicode(
        "fences", help="How the root model writes code: fences (```repl blocks), tools (a `repl` "
                       "and a `final` function tool), auto (tools offered, fences read too)."),
        client=True)
    best_effort = _run(Bool(
        True, help="When a budget (steps, tokens, cost, time, sub-calls) ends a run without an "
                   "answer, ask the root model once for its best answer (marked best-effort)."))
    persistent = _run(Bool(
        False, help="This query builds on the session's earlier runs: the model is told their "
                    "queries and answers, and their variables are still in the REPL."))
    subcalls_enabled = _setting(Bool(
        True, help="llm()/llm_batch()/rlm() work in the REPL; False is the paper's no-sub-call "
                   "ablation."))
    sandboxed = _setting(Bool(
        False, help="The REPL runs in the sandboxed kernel, and the root model's system prompt says "
                    "what its code cannot do. Set by that kernel (docs/sandbox.md)."))
    panel = _setting(Bool(
        True, help="Show the live run widget in the query cell when no front-end mirrors the run."),
        replay=False)

    def __init__(self, **kwargs: Any) -> None:
        for trait_name, trait in setting_traits().items():
            if trait_name not in kwargs:
                raw = os.environ.get(env_name(trait_name, trait))
                if raw not in (None, ""):
                    kwargs[trait_name] = _from_string(trait_name, trait, raw, source="env")
        traits = setting_traits()
        values = {k: v for k, v in kwargs.items() if k in traits and v is not None}
        super().__init__(**{k: v for k, v in kwargs.items() if k not in traits})
        for name, value in values.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except TraitError as exc:
            raise ConfigError(_explain(name, value, exc)) from None

    @validate("api_key")
    def _remember_secret(self, proposal: dict[str, Any]) -> str:
        remember_secret(proposal["value"])
        return proposal["value"]

    @validate("base_url")
    def _check_base_url(self, proposal: dict[str, Any]) -> str:
        url = proposal["value"].strip()
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url {redact(without_userinfo(url))!r} is not an http(s) URL; use e.g. "
                "http://localhost:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama) or "
                "https://api.openai.com/v1"
            )
        userinfo = url.partition("://")[2].split("/", 1)[0].rpartition("@")[0]
        if userinfo:  # a key given as https://user:key@host/v1 is a secret too
            remember_secret(userinfo.partition(":")[2] or userinfo)
        return url

    @validate("image_detail")
    def _check_image_detail(self, proposal: dict[str, Any]) -> str:
        detail = proposal["value"].strip().lower()
        if detail not in ("", "auto", "low", "high"):
            raise ConfigError(f"image_detail must be auto, low or high (or empty), not {detail!r}")
        return detail

    @validate("system_role")
    def _check_system_role(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip().lower()
        if value not in SYSTEM_ROLES:
            raise ConfigError(f"system_role must be one of {', '.join(SYSTEM_ROLES)}, "
                              f"not {proposal['value']!r}")
        return value

    @validate("mode")
    def _check_mode(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].strip().lower()
        if value not in ("fences", "tools", "auto"):
            raise ConfigError(f"mode must be fences, tools or auto, not {proposal['value']!r}")
        return value

    @validate("reasoning_model")
    def _check_reasoning_model(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].strip().lower()
        if value not in ("auto", "yes", "no"):
            raise ConfigError(f"reasoning_model must be auto, yes or no, not {proposal['value']!r}")
        return value

    @validate("models")
    def _check_models(self, proposal: dict[str, Any]) -> str:
        names = [m.strip() for m in proposal["value"].split(",")]
        if proposal["value"].strip() and not all(names):
            raise ConfigError(f"models must be comma-separated model names (root,depth1,...), "
                              f"not {proposal['value']!r}")
        return ",".join(names) if proposal["value"].strip() else ""

    @validate("prices")
    def _check_prices(self, proposal: dict[str, Any]) -> dict[str, Any]:
        prices = proposal["value"]
        for model, table in prices.items():
            if not isinstance(table, dict) or not all(
                    isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                    for v in table.values()):
                raise ConfigError(
                    f"prices[{model!r}] must map prompt/completion/cached to USD per 1M tokens "
                    '(numbers >= 0), e.g. {"prompt": 2.5, "completion": 10}')
        return prices

    # -- derived views ---------------------------------------------------------------------------
    @property
    def scripted(self) -> bool:
        """No key and no endpoint: use the embedded scripted demonstration model."""
        return not self.api_key and not self.base_url

    @property
    def root_model(self) -> str:
        if self.models:
            return self.models.split(",")[0]
        if self.model:
            return self.model
        if self.scripted:
            return SCRIPTED_ROOT
        raise ConfigError(
            "no model named: pass --model / set RLM_MODEL (e.g. gpt-5-mini, or the name your "
            "vLLM/Ollama server serves)"
        )

    @property
    def subcall_model(self) -> str:
        if self.models:
            return self.model_at(1)
        if self.sub_model:
            return self.sub_model
        if self.scripted and not self.model:
            return SCRIPTED_SUB
        return self.root_model

    def model_at(self, depth: int) -> str:
        """The model of a call made at ``depth`` (0: root replies; d: sub-calls and sub-RLM
        roots d levels down), from ``models`` if set, else ``model`` / ``sub_model``."""
        names = [m for m in self.models.split(",") if m]
        if names:
            return names[min(depth, len(names) - 1)]
        return self.root_model if depth == 0 else self.subcall_model

    def settings(self) -> dict[str, Any]:
        """Every setting except secrets: safe to record in a notebook."""
        out = {name: getattr(self, name) for name, trait in setting_traits().items()
               if not trait.metadata.get("secret")}
        out["scripted"] = self.scripted
        if out.get("base_url"):
            out["base_url"] = without_userinfo(out["base_url"])
        return out

    def describe(self) -> dict[str, Any]:
        """Settings for display: secrets shown only as set/unset."""
        out = self.settings()
        out["api_key"] = "set (hidden)" if self.api_key else "not set"
        return out

    def copy(self, **changes: Any) -> RLMConfig:
        values = {name: getattr(self, name) for name in setting_traits()}
        values.update({k: v for k, v in changes.items() if v is not None})
        return RLMConfig(**values)

    def client_key(self) -> tuple[Any, ...]:
        """The values that make a model client: equal keys may share one client."""
        return tuple(_hashable(getattr(self, name)) for name in names_tagged("client"))

    def replayable(self, recorded: dict[str, Any]) -> RLMConfig:
        """This config with a recorded run's trajectory settings (not its endpoint's) applied."""
        keep = set(names_tagged("replay", default=True))
        return self.copy(**{k: v for k, v in recorded.items() if k in keep and v is not None})


# -- the tags, read ------------------------------------------------------------------------------
@functools.cache
def _declared() -> dict[str, TraitType]:
    return {name: trait for name, trait in vars(RLMConfig).items()
            if isinstance(trait, TraitType) and trait.metadata.get("config")}


def setting_traits() -> dict[str, TraitType]:
    """name -> trait of every setting, in declaration order."""
    return dict(_declared())


def names_tagged(tag: str, default: bool = False) -> list[str]:
    return [name for name, trait in setting_traits().items()
            if trait.metadata.get(tag, default)]


def env_name(name: str, trait: TraitType) -> str:
    return str(trait.metadata.get("env") or f"RLM_{name.upper()}")


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _from_string(name: str, trait: TraitType, raw: str, *, source: str) -> Any:
    where = f"{env_name(name, trait)}={raw!r}" if source == "env" else f"{name}={raw!r}"
    try:
        if isinstance(trait, Dict):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if isinstance(trait, Bool):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        return trait.from_string(raw)
    except (ValueError, TraitError) as exc:
        if isinstance(trait, (Integer, Float)):
            kind = "a whole number" if isinstance(trait, Integer) else "a number"
            raise ConfigError(f"{where}: {name} must be {kind}") from None
        raise ConfigError(f"{where} is not a valid {name}: {exc}") from None


def parse_setting(name: str, raw: str) -> Any:
    """A setting's value from text (``%rlm config name=value``, CLI flags); '' is the default."""
    traits = setting_traits()
    if name not in traits:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(traits))}")
    trait = traits[name]
    if raw == "":
        return trait.default_value
    return _from_string(name, trait, raw, source="text")


def _explain(name: str, value: Any, exc: TraitError) -> str:
    """traitlets' messages name the class and the trait machinery; say it plainly."""
    trait = setting_traits().get(name)
    low = getattr(trait, "min", None)
    high = getattr(trait, "max", None)
    try:
        if low is not None and value < low:
            return f"{name} must be at least {low:g}, not {value!r}"
        if high is not None and value > high:
            return f"{name} must be at most {high:g}, not {value!r}"
    except TypeError:
        pass
    if trait is not None and isinstance(trait, (Integer, Float)) and not isinstance(value, (int, float)):
        kind = "a whole number" if isinstance(trait, Integer) else "a number"
        return f"{name} must be {kind}, not {value!r}"
    text = str(exc)
    return text if text.startswith(name) else f"{name}={value!r} is invalid: {text}"


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def without_userinfo(url: str) -> str:
    """``https://user:key@host/v1`` -> ``https://host/v1``: credentials never reach a record."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://{rest.split('@', 1)[1]}"


# -- command-line options, generated -------------------------------------------------------------
_ARG_TYPES: dict[type, Any] = {Integer: int, FiniteFloat: float, Float: float, Unicode: str}


def _iter_options(tag: str) -> Iterator[tuple[str, TraitType]]:
    for name, trait in setting_traits().items():
        if trait.metadata.get(tag):
            yield name, trait


def add_setting_options(parser: argparse.ArgumentParser, tag: str = "per_run",
                        skip: frozenset[str] = frozenset()) -> None:
    """Add ``--name-with-dashes`` for every setting tagged ``tag`` (its help from the trait),
    except those in ``skip`` (a parser that defines them its own way).

    Values are parsed by the trait (``parse_setting``) so a bad one gets the same message
    everywhere; the parser stores them under the setting's name, None when not given.
    """
    for name, trait in _iter_options(tag):
        if name in skip:
            continue
        if isinstance(trait, Bool):
            parser.add_argument(option_name(name), dest=name, default=None,
                                action=argparse.BooleanOptionalAction, help=trait.help)
            continue
        parser.add_argument(option_name(name), dest=name, default=None, metavar=name.upper(),
                            type=_checked(name), help=trait.help)


def _checked(name: str) -> Any:
    def convert(raw: str) -> Any:
        try:
            return parse_setting(name, raw)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def options_given(args: argparse.Namespace, tag: str = "per_run") -> dict[str, Any]:
    """The settings tagged ``tag`` that were given on a command line parsed with
    :func:`add_setting_options` (name -> value), validated together by building a config."""
    values = {name: getattr(args, name) for name, _ in _iter_options(tag)
              if getattr(args, name, None) is not None and hasattr(args, name)}
    if values:
        RLMConfig(**values)  # raises ConfigError with the setting's name if one is out of range
    return values


def setting_flags(values: dict[str, Any]) -> list[str]:
    """Settings as ``--name value`` flags (the inverse of :func:`add_setting_options`)."""
    out: list[str] = []
    traits = setting_traits()
    for name, value in values.items():
        if isinstance(traits[name], Bool):
            out.append(option_name(name) if value else "--no-" + name.replace("_", "-"))
        else:
            out += [option_name(name), json.dumps(value) if isinstance(value, dict) else str(value)]
    return out
