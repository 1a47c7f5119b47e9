"""waitroom: a virtual waiting room and rate limiter, as a mitmproxy addon."""

from __future__ import annotations

import platform
from importlib import metadata


def _installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


__version__ = _installed_version("waitroom")
"""The installed distribution's version (pyproject.toml's `version`): one source for the CLI, the
startup log, /readyz and `waitroom_build_info`."""


def build_info() -> dict[str, str]:
    """What an operator needs to name the build: waitroom's, mitmproxy's and Python's versions."""
    return {
        "version": __version__,
        "mitmproxy": _installed_version("mitmproxy"),
        "python": platform.python_version(),
    }


def version_line() -> str:
    """`waitroom 0.1.0 (mitmproxy 12.2.1, Python 3.13.0)`: what `waitroom --version` prints."""
    info = build_info()
    return f"waitroom {info['version']} (mitmproxy {info['mitmproxy']}, Python {info['python']})"
