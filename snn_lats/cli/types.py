"""argparse ``type=`` converters the command-line tools share, so a value is refused the same way in each."""
from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """``float`` without ``nan`` and ``inf``, which ``float()`` takes and every range check lets through or
    misreads (``--lr inf`` passed ``lr > 0``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value
