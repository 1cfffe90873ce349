"""End-to-end delay budgets: "5ms", "0.5 ms", "250us", "1s" -> milliseconds as a float.

Milliseconds because descriptors state budgets in ms and per-hop figures compare in ms
without large or tiny exponents; the model's field says its unit (delay_budget_ms).
A bare number is taken as milliseconds, the unit every descriptor seen in the wild uses.
"""
from __future__ import annotations

import math
import re

MS_PER_UNIT = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_BUDGET = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s.]*)\s*")


def delay_ms(value: object) -> float:
    """The budget in milliseconds; ValueError says what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"a delay budget is a duration like '5ms', got {value!r}")
    ms = value
    if isinstance(value, str):
        match = _BUDGET.fullmatch(value)
        if not match:
            raise ValueError(f"'{value}' is not a duration like '5ms' or '250us'")
        number, unit = match.groups()
        if unit.lower() not in MS_PER_UNIT:
            raise ValueError(f"'{value}': unknown unit '{unit}' (units: {', '.join(MS_PER_UNIT)})")
        ms = float(number) * MS_PER_UNIT[unit.lower()]
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"a delay budget must be a positive duration, got {value!r} (leave it out for none)")
    return float(ms)
