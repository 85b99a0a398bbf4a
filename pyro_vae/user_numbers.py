"""Numbers as users write them, read and checked in one place.

Counts: ``5000``, ``5e3`` and ``1e7`` are the same kind of count. YAML, ``--set`` and Python read
``5e3`` as the float 5000.0; every count pyro-vae takes (a config's ``training.sample_budget``, a
component's ``num_particles``, ``pyro-vae evaluate --k``, an estimator's ``k``) accepts a float
without a fractional part as that whole number and records the int; ``2.5`` and ``true`` are
refused. Real settings (a step size, a jitter, a threshold) are ints or floats, never bools or
text. Seeds are below ``SEEDS_BELOW``.
"""

from __future__ import annotations

import numbers
import operator
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Optional

from pydantic import BeforeValidator, Strict


SEEDS_BELOW = 2**63  # torch's seeds are 64-bit


def is_real_number(value: Any) -> bool:
    """Whether ``value`` is a number a real-valued setting takes: an int or float (numpy's too),
    not a bool, a string or a tensor."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_whole_number(value: Any) -> Any:
    """``value`` as an int where it is a float with no fractional part (``5e3`` -> 5000); any other
    value as it is, for the caller's own check to accept or refuse (``True`` stays a bool)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_whole_number(text: str) -> Optional[int]:
    """The whole number ``text`` writes (``"5000"``, ``"5e3"``, ``"5000.0"``), exactly; None for any
    other text (``"2.5"``, ``"inf"``, ``"five"``, a number of more than 4300 digits)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    # beyond Python's own limit for int("...") (4300 digits) no count is meant, and 1e999999999
    # would take gigabytes to write out
    if not value.is_finite() or value.adjusted() > 4300 or value != value.to_integral_value():
        return None
    return int(value)


# A pydantic field type: an int, written as one or as a whole float; strict, so that ``true`` and
# ``"3"`` stay refused. (Strictness belongs to the type, ahead of the conversion: pydantic 2.5 cannot
# apply a field's ``strict=True`` on top of a ``BeforeValidator``.)
WholeNumber = Annotated[int, Strict(), BeforeValidator(as_whole_number)]


def count(name: str, value: Any, least: int = 1) -> int:
    """``value`` as a whole number >= ``least``: an int, a numpy or torch integer, or a float with
    no fractional part (``k=5e3``); a ValueError that names the argument ``name`` for anything else
    (``2.5``, ``True``, ``"5"``, ``0`` where ``least`` is 1)."""
    whole: Optional[int] = None
    if not isinstance(value, bool):
        try:
            whole = operator.index(as_whole_number(value))
        except TypeError:
            pass
    if whole is None or whole < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    return whole


def seed(name: str, value: Any) -> int:
    """``value`` as a seed, a whole number from 0 to ``SEEDS_BELOW - 1``; a ValueError naming ``name`` otherwise."""
    whole = count(name, value, 0)
    if whole >= SEEDS_BELOW:
        raise ValueError(f"{name} must be below 2**63 (torch's seeds are 64-bit), got {value!r}")
    return whole
