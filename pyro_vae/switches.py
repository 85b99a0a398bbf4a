"""On/off switches for speed paths that do not change the math, read from the environment.

Each is read at first use (not at import), so that the CLI can check every switch before any work
and report a bad value as one line.
"""

from __future__ import annotations

import os

from .errors import ConfigError


def env_switch(name: str, on: str, off: str) -> bool:
    """The value of the environment variable ``name``: ``1`` (the default) or ``0``.

    :param on: what ``1`` does, and ``off`` what ``0`` does, for the error message.
    :raises ConfigError: for any other value.
    """
    value = os.environ.get(name, "1")
    if value not in ("0", "1"):
        raise ConfigError(f"{name}={value!r}: use 1 ({on}, the default) or 0 ({off})")
    return value == "1"
