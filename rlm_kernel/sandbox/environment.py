"""The environment model code sees: an allow-list of harmless variables, and a private home.

An allow-list, not a deny-list, because secrets come under any name (``AWS_SECRET_ACCESS_KEY``,
``GITHUB_TOKEN``, ``JUPYTERHUB_API_TOKEN``, ``SSH_AUTH_SOCK``, a proxy URL with a password...).
What the kernel needs (the endpoint, the key, proxies) it reads before the scrub and hands to the
forwarder, which runs outside the sandbox. ``HOME``, the XDG folders, ``TMPDIR`` and matplotlib's
cache point into the sandbox's private temporary folder, so tools that write caches there work and
``~`` never names the user's real home.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, MutableMapping

__all__ = ["KEEP", "KEEP_PREFIXES", "scrub", "private_dirs"]

KEEP = frozenset({
    "PATH", "LANG", "LANGUAGE", "TERM", "TZ", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR",
    "CLICOLOR", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE", "PYTHONUTF8", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
    "MPLBACKEND", "JPY_PARENT_PID", "JPY_SESSION_NAME",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
})
KEEP_PREFIXES = ("LC_", "RLM_")


def private_dirs(tmpdir: str) -> dict[str, str]:
    """The variables that point into the sandbox's private folder (created here)."""
    home = os.path.join(tmpdir, "home")
    values = {
        "HOME": home,
        "TMPDIR": tmpdir, "TMP": tmpdir, "TEMP": tmpdir,
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "MPLCONFIGDIR": os.path.join(home, ".config", "matplotlib"),
        "IPYTHONDIR": os.path.join(home, ".ipython"),
    }
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MPLCONFIGDIR"):
        os.makedirs(values[name], mode=0o700, exist_ok=True)
    return values


def scrub(environ: MutableMapping[str, str], tmpdir: str, keep: Iterable[str] = ()) -> list[str]:
    """Remove every variable not allowed from ``environ`` (in place); return the names removed."""
    allowed = KEEP | set(keep)
    removed = [name for name in list(environ)
               if name not in allowed and not name.startswith(KEEP_PREFIXES)]
    for name in removed:
        del environ[name]  # os.environ: unsetenv too, so child processes never get it
    environ.update(private_dirs(tmpdir))
    if environ is os.environ:
        tempfile.tempdir = tmpdir
    return sorted(removed)
