"""Isolation for every test: no user profile, data or configuration leaks in or out."""

from __future__ import annotations

from pathlib import Path

import pytest


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
