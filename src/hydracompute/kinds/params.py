"""Parameter validation shared by job kinds: typed fields with limits, all errors at once."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hydracompute.errors import InvalidParams

_MISSING = object()


class ParamReader:
    """Reads typed, bounded fields from raw parameters and collects every error.

    Use one reader per validation: call the ``int``/``float``/``choice`` readers for each
    field, then :meth:`finish`, which raises :class:`InvalidParams` listing every problem
    (including fields nobody asked for) or returns nothing.
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        if not isinstance(raw, Mapping):
            raise InvalidParams({"params": "must be a JSON object"})
        self._raw = raw
        self._seen: set[str] = set()
        self.errors: dict[str, str] = {}

    def present(self, name: str) -> bool:
        return name in self._raw

    def int(self, name: str, lo: int, hi: int, default: Any = _MISSING) -> int:
        """An integer in ``[lo, hi]``; booleans and integral floats like ``1e9`` accepted
        only when exactly integral (JSON clients often send ``1e10``)."""
        value = self._get(name, default)
        if value is _MISSING:
            return lo
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.errors[name] = "must be an integer"
            return lo
        if isinstance(value, float):
            if not math.isfinite(value) or value != math.floor(value):
                self.errors[name] = "must be an integer"
                return lo
            value = int(value)
        if not lo <= value <= hi:
            self.errors[name] = f"must be between {lo} and {hi}"
            return lo
        return value

    def float(self, name: str, lo: float, hi: float, default: Any = _MISSING) -> float:
        """A finite number in ``[lo, hi]``."""
        value = self._get(name, default)
        if value is _MISSING:
            return lo
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.errors[name] = "must be a number"
            return lo
        value = float(value)
        if not math.isfinite(value) or not lo <= value <= hi:
            self.errors[name] = f"must be a finite number between {lo:g} and {hi:g}"
            return lo
        return value

    def choice(self, name: str, options: Sequence[str], default: Any = _MISSING) -> str:
        value = self._get(name, default)
        if value is _MISSING:
            return options[0]
        if value not in options:
            self.errors[name] = f"must be one of {', '.join(options)}"
            return options[0]
        return str(value)

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        """The value as given, for fields the typed readers do not cover; ``default`` if it
        is absent (without a default it is required, and ``None`` stands in for it)."""
        value = self._get(name, default)
        return None if value is _MISSING else value

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def finish(self) -> None:
        """Raise :class:`InvalidParams` if any field was invalid, missing or unknown."""
        for name in self._raw:
            if name not in self._seen:
                self.errors.setdefault(str(name), "unknown parameter")
        if self.errors:
            raise InvalidParams(self.errors)

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self._raw:
            return self._raw[name]
        if default is _MISSING:
            self.errors[name] = "is required"
        return default
