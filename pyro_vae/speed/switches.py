"""On/off switches for speed paths that do not change the math, read from the environment.

Each is read at first use (not at import), so that the CLI can check every switch before any work
and report a bad value as one line.
"""

from __future__ import annotations

import os
from typing import Optional

from pyro_vae.errors import ConfigError


def env_switch(name: str, on: str, off: str) -> bool:
    """The value of the environment variable ``name``: ``1`` (the default) or ``0``.

    :param on: what ``1`` does, and ``off`` what ``0`` does, for the error message.
    :raises ConfigError: for any other value.
    """
    value = os.environ.get(name, "1")
    if value not in ("0", "1"):
        raise ConfigError(f"{name}={value!r}: use 1 ({on}, the default) or 0 ({off})")
    return value == "1"


class Switch:
    """An environment switch read at its first call (``env_switch``), then remembered in ``value``.
    Setting ``value`` (True/False) overrides the environment; None reads it again."""

    def __init__(self, name: str, on: str, off: str) -> None:
        self.name, self.on, self.off = name, on, off
        self.value: Optional[bool] = None

    def __call__(self) -> bool:
        if self.value is None:
            self.value = env_switch(self.name, on=self.on, off=self.off)
        return self.value
