"""Where a store lives, read once from its URL (``--store``, ``HYDRACOMPUTE_STORE``).

- ``memory://``: in memory, lost at exit (tests, trials);
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a plain file path:
  one SQLite file, the embedded default; ``?busy_timeout_s=S`` (0.01–600, 10 by default) is
  how long a transaction waits for another process's write lock on a shared file before the
  coordinator answers 503;
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME&…]`` (or
  ``postgres://``): a PostgreSQL database that several coordinators may share. ``schema``
  (default ``public``) is this pool's; every other query parameter goes to libpq as it is
  (``sslmode``, ``connect_timeout``, …).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

#: A schema name as PostgreSQL takes it unquoted (we quote it anyway).
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class StoreScheme(StrEnum):
    MEMORY = "memory"
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True)
class StoreLocation:
    scheme: StoreScheme
    #: The SQLite file (``:memory:`` for a throw-away database).
    path: str = ""
    #: The PostgreSQL connection URL as libpq takes it (without ``schema``).
    conninfo: str = ""
    schema: str = "public"
    #: How long a SQLite transaction waits for another process's write lock (None: the
    #: backend's default).
    busy_timeout_s: float | None = None

    @classmethod
    def parse(cls, url: str) -> StoreLocation:
        """The location a store URL names.

        Raises:
            ValueError: an unsupported scheme or a malformed URL (the message says which).
        """
        if url == "memory://":
            return cls(StoreScheme.MEMORY)
        if url.startswith("sqlite://"):
            path, _, query = url.removeprefix("sqlite://").partition("?")
            path = path.removeprefix("/") if not path.startswith("//") else path[1:]
            return cls(
                StoreScheme.SQLITE, path=path or ":memory:", busy_timeout_s=_busy_timeout_s(query)
            )
        if url.startswith(("postgresql://", "postgres://")):
            return cls._postgresql(url)
        if "://" in url:
            raise ValueError(
                f"unsupported store URL {url!r}: use memory://, sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/DATABASE"
            )
        return cls(StoreScheme.SQLITE, path=str(Path(url)))

    @classmethod
    def _postgresql(cls, url: str) -> StoreLocation:
        parts = urllib.parse.urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"store URL {redacted(url)!r}: {exc}") from exc
        if not parts.path.strip("/"):
            raise ValueError(
                f"store URL {redacted(url)!r} names no database: "
                "postgresql://USER@HOST:PORT/DATABASE"
            )
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        schema = schemas[-1] if schemas else "public"
        if not _SCHEMA.fullmatch(schema):
            raise ValueError(f"schema {schema!r}: letters, digits and _ only, 63 at most")
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
        conninfo = urllib.parse.urlunsplit(parts._replace(scheme="postgresql", query=rest))
        return cls(StoreScheme.POSTGRESQL, conninfo=conninfo, schema=schema)

    def shown(self) -> str:
        """The location as it may be printed (a password left out)."""
        if self.scheme is StoreScheme.MEMORY:
            return "memory://"
        if self.scheme is StoreScheme.SQLITE:
            return f"sqlite:///{self.path}"
        schema = "" if self.schema == "public" else f" (schema {self.schema})"
        return redacted(self.conninfo) + schema


def _busy_timeout_s(query: str) -> float | None:
    """The ``busy_timeout_s`` option of a SQLite URL's query (the only one it takes)."""
    options = dict(
        urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    )
    unknown = set(options) - {"busy_timeout_s"}
    if unknown:
        raise ValueError(f"unknown SQLite store option(s): {', '.join(sorted(unknown))}")
    if "busy_timeout_s" not in options:
        return None
    try:
        timeout = float(options["busy_timeout_s"])
    except ValueError:
        timeout = -1.0
    if not 0.01 <= timeout <= 600:
        raise ValueError("busy_timeout_s must be a number of seconds between 0.01 and 600")
    return timeout


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
