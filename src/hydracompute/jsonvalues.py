"""Values JSON cannot carry: NaN and the infinities; and compact JSON text, fast.

Python's ``json`` writes them as ``NaN`` and ``Infinity``, which no JSON reader is obliged to
accept, and httpx refuses to send them ("Out of range float values are not JSON
compliant"). Whatever sends JSON checks first with :func:`nonfinite_path`, so that the user
gets an error naming the value instead of a traceback.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import math
from collections.abc import Callable, Mapping
from typing import Any


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


#: The C parts of :mod:`json` (``None`` where Python was built without them).
_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_make_scanner: Any = getattr(json.scanner, "c_make_scanner", None)


def _c_encoder(sort_keys: bool) -> Callable[[Any, int], Any] | None:
    """The C encoder that ``json.JSONEncoder(separators=(",", ":"), sort_keys=...)``
    builds on every call to ``encode``, made once (``None`` without the C module). No
    cycle check (``markers``): the values written hold no reference cycles."""
    if _make_encoder is None:
        return None
    default = json.JSONEncoder().default
    ascii_text = json.encoder.encode_basestring_ascii
    return _make_encoder(  # type: ignore[no-any-return]
        None, default, ascii_text, None, ":", ",", sort_keys, False, True
    )


_compact_c, _canonical_c = _c_encoder(False), _c_encoder(True)
_compact_py = json.JSONEncoder(separators=(",", ":")).encode
_canonical_py = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
_scan = None if _make_scanner is None else _make_scanner(json.JSONDecoder())
_decode = json.JSONDecoder().decode


def compact(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``, without the dozen lines of Python that
    build an encoder on every call (it runs for every JSON column of every row written)."""
    if _compact_c is None or isinstance(value, str):
        return _compact_py(value)
    return "".join(_compact_c(value, 0))


def canonical(value: Any) -> str:
    """:func:`compact` with the keys of every object sorted."""
    if _canonical_c is None or isinstance(value, str):
        return _canonical_py(value)
    return "".join(_canonical_c(value, 0))


def parsed(text: str) -> Any:
    """``json.loads(text)`` for a ``str``, by the C scanner straight away when the text is
    one JSON value from its first character to its last (else as ``json.loads``, which
    also says what is wrong)."""
    if _scan is not None:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            pass
        else:
            if end == len(text):
                return value
    return _decode(text)
