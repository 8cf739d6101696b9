"""What counts as a number in a row, a report or a searcher's result: ints and floats, numpy's too, never a bool
(True is an int to Python, but a yes/no column is not a figure)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def finite(value: Any) -> bool:
    """A number that is neither NaN nor infinite: a figure that was measured."""
    return is_number(value) and math.isfinite(value)
