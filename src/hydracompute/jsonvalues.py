"""Values JSON cannot carry: NaN and the infinities.

Python's ``json`` writes them as ``NaN`` and ``Infinity``, which no JSON reader is obliged to
accept, and httpx refuses to send them ("Out of range float values are not JSON
compliant"). Whatever sends JSON checks first with :func:`nonfinite_path`, so that the user
gets an error naming the value instead of a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def nonfinite_path(value: object, path: str = "") -> str | None:
    """Where the first NaN or infinite float inside ``value`` is (e.g. ``params.samples``,
    ``items[2]``; ``path`` itself for a bare float), or ``None`` if there is none.

    Mappings and lists/tuples are searched; other values are left alone.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = nonfinite_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = nonfinite_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
