"""Placement: which workers a job's chunks may go to, by the labels the pool's admin gave
and by the version of Hydra Compute the workers run.

An admin labels workers (``trusted``, ``gpu``, ``site-a``...); a job may require labels,
and its chunks go only to workers that carry every one of them. Labels are the admin's word
about machines they vouch for; nothing here checks a machine (docs/security.md says what
that does and does not protect).

A job whose parameters a worker of an older version would refuse (a Mandelbrot job naming
its tile side, which workers before 0.2.0 do not know) goes only to workers that said they
run at least the version its kind names (:meth:`JobKind.min_worker_version`), so that a
pool whose volunteers upgrade at their own pace does not fail such jobs on their refusals.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable

LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
#: The most labels one worker carries, or one job requires.
MAX_LABELS = 16


def label_errors(labels: Iterable[object]) -> str | None:
    """Why ``labels`` is not an acceptable set of labels, or ``None``."""
    items = list(labels)
    if len(items) > MAX_LABELS:
        return f"at most {MAX_LABELS} labels"
    for label in items:
        if not isinstance(label, str) or not LABEL.match(label):
            return f"a label matches {LABEL.pattern}, not {label!r}"
    return None


def may_place(required: Collection[str], labels: Collection[str]) -> bool:
    """Whether a worker carrying ``labels`` may compute a job that requires ``required``."""
    return all(label in labels for label in required)


#: A version's leading numbers ("0.2.0rc1" → 0, 2, 0).
_VERSION = re.compile(r"^\d+(?:\.\d+)*")


@functools.lru_cache(maxsize=256)
def version_key(version: str) -> tuple[int, ...]:
    """A version's release numbers, for comparing, without trailing zeros ("0.2" is
    0.2.0); ``()`` (older than any) when it has none."""
    found = _VERSION.match(version.strip())
    if not found:
        return ()
    numbers = [int(part) for part in found.group().split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def may_run(minimum: str, version: str) -> bool:
    """Whether a worker running ``version`` may compute a job that needs ``minimum``
    (``""``: any worker); a worker that gave no version is taken as older than any."""
    return not minimum or version_key(version) >= version_key(minimum)


def relabel(labels: Iterable[str], add: Iterable[str], remove: Iterable[str]) -> list[str]:
    """``labels`` with ``add`` added and ``remove`` removed, sorted, without repeats."""
    removed = set(remove)
    return sorted((set(labels) | set(add)) - removed)
