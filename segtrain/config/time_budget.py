"""`time_budget` values: the forms a person writes ("30m", "1h30m", 90) and the seconds they mean.

Parsed once, when the plan is made (config/plan.py `Plan.budget_seconds`); training/budget.py
plans the run's length from those seconds.
"""

from __future__ import annotations

import math
import re

from segtrain.errors import ConfigError

FORMS = ('a number of seconds (e.g. 90) or a duration such as "90s", "30m", "1h30m" or "2h"; '
         "null turns it off")
_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")


def budget_seconds(value, source: str = "config") -> float | None:
    """The seconds a time_budget value means (None: off); anything else is one line naming the forms."""
    if value is None:
        return None
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(text)
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif match and any(match.groups()):
            hours, minutes, secs = (float(group or 0) for group in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{source}: key 'time_budget' is {value!r}; give {FORMS}.")
    return seconds


def describe_budget(seconds: float) -> str:
    """1800 -> "30m", 5400 -> "1h30m", 90 -> "1m30s": the form a person writes."""
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or f"{seconds:g}s"
