"""Isolation for every test: no user profile, data or configuration leaks in or out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.postgres_support import Schemas


@pytest.fixture(autouse=True)
def private_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("home")
    for variable, folder in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        monkeypatch.setenv(variable, str(Path(home) / folder))
    for variable in (
        "HYDRACOMPUTE_URL",
        "HYDRACOMPUTE_API_KEY",
        "HYDRACOMPUTE_CA_FINGERPRINT",
        "HYDRACOMPUTE_JOIN_TOKEN",
        "HYDRACOMPUTE_STORE",
        "HYDRACOMPUTE_DATA_DIR",
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="session")
def postgres_server() -> None:
    """This machine's PostgreSQL, started if it is down (the tests fail if it cannot be)."""
    from tests.postgres_support import ensure_server

    ensure_server()


@pytest.fixture
def postgres(postgres_server: None) -> Iterator[Schemas]:
    """Backends on schemas of this test's own, dropped when it ends."""
    from tests.postgres_support import Schemas, drop_schemas

    schemas = Schemas()
    yield schemas
    drop_schemas(schemas.names)
