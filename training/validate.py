"""Checks of the training settings that epoch training and GAN training share.

One function per kind of setting, so that `--seed -1` or `--lr 0` is refused in the same
words whichever way a model trains, before anything is built or written.
"""
from __future__ import annotations

import math

from symgrad.symbolic.errors import SymgradError


def positive_int(name: str, value) -> int:
    """An int of at least 1 (a bool is not one): epochs, steps, batch size, patience."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SymgradError(f"{name} must be a positive integer, not {value!r}")
    return value


def seed(value) -> int:
    """A seed numpy's SeedSequence takes: a non-negative int."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SymgradError(f"seed must be a non-negative integer, not {value!r}")
    return value


def positive_number(name: str, value) -> float:
    """A finite number above 0 (not a bool): learning rate, clip norm."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and value > 0 and math.isfinite(value)):
        raise SymgradError(f"{name} must be a positive number, not {value!r}")
    return float(value)
