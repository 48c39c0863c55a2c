"""Allowed hours: windows of local time, by day of the week. Pure: no clock is read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    "daily": tuple(range(7)),
    "weekdays": tuple(range(5)),
    "weekends": (5, 6),
}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


_DAY_NUMBERS = {name: i for i, name in enumerate(DAY_NAMES)} | {
    full: i
    for i, full in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}


def _day(name: str) -> int:
    if name not in _DAY_NUMBERS:
        raise ValueError(f"unknown day {name!r} (use mon, tue, ... sun)")
    return _DAY_NUMBERS[name]


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if item in _DAY_ALIASES:
            days.update(_DAY_ALIASES[item])
        elif "-" in item:
            first, last = (_day(part.strip()) for part in item.split("-", 1))
            span = (last - first) % 7
            days.update((first + i) % 7 for i in range(span + 1))
        else:
            days.add(_day(item))
    return frozenset(days)


def _minute(text: str, end: bool) -> int:
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a time like 08:30")
    hours, minutes = int(match.group(1)), int(match.group(2))
    value = hours * 60 + minutes
    if minutes > 59 or value > 24 * 60 or (value == 24 * 60 and not end):
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59, or 24:00 to end)")
    return value


@dataclass(frozen=True)
class HoursWindow:
    """When computing is allowed: some days, from ``start_min`` to ``end_min`` (minutes
    after midnight, local time). A window whose end is not after its start runs overnight:
    ``fri 22:00-07:00`` is Friday 22:00 to Saturday 07:00 (the days name the start)."""

    days: frozenset[int]
    start_min: int
    end_min: int
    text: str

    @classmethod
    def parse(cls, text: str) -> HoursWindow:
        """``"22:00-07:00"``, ``"mon-fri 18:00-08:00"``, ``"sat,sun"``, ``"weekdays 12:00-14:00"``.

        Raises:
            ValueError: not such a window.
        """
        words = text.strip().lower().split()
        if not 1 <= len(words) <= 2:
            raise ValueError(f"{text!r} is not [DAYS] [HH:MM-HH:MM]")
        days, span = frozenset(range(7)), "00:00-24:00"
        if len(words) == 2:
            days, span = _days(words[0]), words[1]
        elif any(c.isdigit() for c in words[0]):
            span = words[0]
        else:
            days = _days(words[0])
        start_text, dash, end_text = span.partition("-")
        if not dash:
            raise ValueError(f"{span!r} is not a span of time like 08:00-18:00")
        start, end = _minute(start_text, end=False), _minute(end_text, end=True)
        if start == end:
            raise ValueError(f"{span!r} is empty (for a whole day, write 00:00-24:00)")
        return cls(days, start, end, " ".join(text.split()))

    def contains(self, now_local: datetime) -> bool:
        minute, day = now_local.hour * 60 + now_local.minute, now_local.weekday()
        if self.start_min < self.end_min:
            return day in self.days and self.start_min <= minute < self.end_min
        return (day in self.days and minute >= self.start_min) or (
            (day - 1) % 7 in self.days and minute < self.end_min
        )
