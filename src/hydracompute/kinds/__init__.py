"""Job kinds and their registry.

Kinds are found through the ``hydracompute.kinds`` entry-point group: a third-party
package adds ``[project.entry-points."hydracompute.kinds"] mykind = "pkg.mod:MyKind"``
and, once installed, coordinators accept its jobs and workers that have it run them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import entry_points

from hydracompute.errors import UnknownKind
from hydracompute.kinds.base import (
    Answer,
    Artefact,
    ArtefactStream,
    ChunkOutput,
    JobKind,
    ParamField,
    Preview,
)

__all__ = [
    "Answer",
    "Artefact",
    "ArtefactStream",
    "ChunkOutput",
    "JobKind",
    "KindRegistry",
    "ParamField",
    "Preview",
    "default_registry",
]

ENTRY_POINT_GROUP = "hydracompute.kinds"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class KindRegistry:
    """Maps kind names to kind instances; refuses duplicates and malformed names."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind) -> JobKind:
        """Add ``kind``.

        Raises:
            ValueError: the name is malformed or already registered.
        """
        name = getattr(kind, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"job kind name {name!r} must match {_NAME.pattern}")
        if name in self._kinds:
            raise ValueError(f"job kind {name!r} is already registered")
        self._kinds[name] = kind
        return kind

    def get(self, name: str) -> JobKind:
        """The kind called ``name``.

        Raises:
            UnknownKind: none is registered under that name.
        """
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise UnknownKind(f"no job kind {name!r} is installed (installed: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    @classmethod
    def from_entry_points(cls) -> KindRegistry:
        """A registry of every kind installed in this environment."""
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            kind_class = ep.load()
            kind = kind_class()
            if kind.name != ep.name:
                raise ValueError(
                    f"entry point {ep.name!r} loads a kind named {kind.name!r}; they must match"
                )
            registry.register(kind)
        return registry


_default: KindRegistry | None = None


def default_registry() -> KindRegistry:
    """The registry of installed kinds, loaded once per process."""
    global _default
    if _default is None:
        _default = KindRegistry.from_entry_points()
    return _default
