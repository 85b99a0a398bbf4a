"""The spread of a benchmark's ratio within one run, from its interleaved rounds.

Every benchmark times its sides in rounds (A B A B ...: an epoch, an IWAE chunk, an HMC
trajectory) and reports the ratio of their medians or totals. The ratio of each round's pair,
A_i / B_i, shows how much of that ratio is the machine's noise: the quartiles of these paired
ratios are printed beside it, so that a ratio just above or below a target can be read against
the spread of the run that produced it.
"""

from __future__ import annotations

import statistics
from typing import Sequence


def paired_ratios_line(label: str, ours: Sequence[float], theirs: Sequence[float], unit: str) -> str:
    """``paired <label>: median m, quartiles q1-q3 over n <unit>`` for the rounds' ratios
    ``ours[i] / theirs[i]`` (both lists of seconds, one entry per round, in the order timed)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"paired ratios need one time per round on each side, got {len(ours)} and {len(theirs)}")
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    if len(ratios) == 1:
        q1 = q3 = ratios[0]
    else:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return f"paired {label}: median {statistics.median(ratios):.3f}, quartiles {q1:.3f}-{q3:.3f} over {len(ratios)} {unit}"
