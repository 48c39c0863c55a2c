"""The project's licence: the file, the package's metadata and the README agree."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_is_apache_2_everywhere_it_is_stated() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    # What pip shows users of the installed package.
    metadata = importlib.metadata.metadata("hydracompute")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "[Apache License 2.0](LICENSE)" in (ROOT / "README.md").read_text()
