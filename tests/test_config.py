"""Settings are declared once (``RLMConfig``'s traits and their tags); everything else is derived."""

from __future__ import annotations

import argparse
import math
import re

import pytest

from rlm_kernel.config import (
    RLMConfig,
    add_setting_options,
    env_name,
    names_tagged,
    options_given,
    parse_setting,
    setting_flags,
    setting_traits,
)
from rlm_kernel.errors import ConfigError
from rlm_kernel.kernel.clients import ClientPool
from rlm_kernel.kernel.options import parse_rlm_cell

#: A value different from the default, for every setting of the model client.
CHANGED = {
    "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-different-key-123456",
    "concurrency": 3, "requests_per_minute": 60, "tokens_per_minute": 1000, "max_retries": 1,
    "call_timeout": 7.0, "fast_transport": False, "temperature": 0.5, "root_max_tokens": 99,
    "sub_max_tokens": 77, "stream": False,
    "prices": {"m": {"prompt": 1.0}}, "cache": False, "scripted_latency": 0.01,
    "reasoning_effort": "high", "reasoning_model": "yes", "mode": "tools",
}


def test_every_client_setting_changes_the_client_key() -> None:
    assert set(CHANGED) == set(names_tagged("client")), "give CHANGED a value for each"
    base = RLMConfig()
    for name, value in CHANGED.items():
        assert base.copy(**{name: value}).client_key() != base.client_key(), name


def test_the_kernel_pool_gives_a_new_client_when_prices_change() -> None:
    pool = ClientPool()
    try:
        cfg = RLMConfig()
        first = pool.client_for(cfg)
        assert pool.client_for(cfg.copy()) is first
        priced = pool.client_for(cfg.copy(prices={"scripted-root": {"prompt": 1.0}}))
        assert priced is not first and priced.config.prices
    finally:
        pool.close()


def test_replay_keeps_the_trajectory_settings_not_the_endpoint() -> None:
    recorded = {"max_steps": 7, "output_chars": 500, "base_url": "http://elsewhere/v1",
                "concurrency": 99, "prices": {"x": {"prompt": 9}}, "scripted": True}
    cfg = RLMConfig(concurrency=4).replayable(recorded)
    assert (cfg.max_steps, cfg.output_chars) == (7, 500)
    assert (cfg.base_url, cfg.concurrency, cfg.prices) == ("", 4, {})


def test_the_magic_and_the_cli_offer_every_per_run_setting() -> None:
    per_run = names_tagged("per_run")
    parser = argparse.ArgumentParser()
    add_setting_options(parser, "cli")
    flags = {a.dest for a in parser._actions}
    assert set(per_run) <= flags and set(names_tagged("cli")) == flags - {"help"}
    opts, _ = parse_rlm_cell("%%rlm " + " ".join(setting_flags({"max_steps": 3, "concurrency": 2}))
                             + "\nq")
    assert (opts["max_steps"], opts["concurrency"]) == (3, 2)
    args = parser.parse_args(["--max-cost", "0.5", "--call-timeout", "9"])
    assert options_given(args, "cli") == {"max_cost": 0.5, "call_timeout": 9.0}


@pytest.mark.parametrize("name,raw,message", [
    ("concurrency", "0", "concurrency must be at least 1, not 0"),
    ("concurrency", "-5", "concurrency must be at least 1, not -5"),
    ("step_timeout", "-1", "step_timeout must be at least 0"),
    ("max_subcalls", "-1", "max_subcalls must be at least 0"),
    ("max_wall_time", "nan", "max_wall_time must be a finite number"),
    ("max_steps", "many", "max_steps must be a whole number"),
    ("base_url", "ftp://x", "not an http(s) URL"),
    ("prices", '{"m": {"prompt": -1}}', "prices['m'] must map"),
])
def test_bad_values_get_one_clear_line(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        RLMConfig(**{name: parse_setting(name, raw)})


def test_environment_variables_give_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_MAX_STEPS", "12")
    monkeypatch.setenv("RLM_CACHE", "false")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    cfg = RLMConfig()
    assert (cfg.max_steps, cfg.cache, cfg.base_url) == (12, False, "http://127.0.0.1:1/v1")
    assert env_name("api_key", setting_traits()["api_key"]) == "OPENAI_API_KEY"
    monkeypatch.setenv("RLM_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="RLM_CONCURRENCY='lots'"):
        RLMConfig()


def test_recorded_settings_hold_no_secret() -> None:
    cfg = RLMConfig(api_key="sk-secret-abcdefghijkl", base_url="https://user:pw@host.example/v1")
    recorded = cfg.settings()
    assert "api_key" not in recorded and recorded["base_url"] == "https://host.example/v1"
    assert cfg.describe()["api_key"] == "set (hidden)"
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in recorded.values())


def test_the_readme_settings_table_lists_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in setting_traits() if f"`{name}`" not in table]
    assert not missing, f"README's settings table lacks {missing}"
