"""Which coordinator a client talks to, with which key: one answer for the command line and
the Python client.

Each of the URL, the API key and the CA fingerprint is taken from the caller's argument,
else from its environment variable (``HYDRACOMPUTE_URL``, ``HYDRACOMPUTE_API_KEY``,
``HYDRACOMPUTE_CA_FINGERPRINT``), else from the login profile that ``hydracompute login``
saved. The profile's key and fingerprint belong to its pool only: they are used only when
the URL in use is the profile's. Without any URL, :data:`DEFAULT_URL`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hydracompute.private_files import write_private

DEFAULT_URL = "http://127.0.0.1:8765"
URL_VARIABLE = "HYDRACOMPUTE_URL"
API_KEY_VARIABLE = "HYDRACOMPUTE_API_KEY"
CA_FINGERPRINT_VARIABLE = "HYDRACOMPUTE_CA_FINGERPRINT"
_PROFILE_FIELDS = ("url", "api_key", "ca_fingerprint")


@dataclass(frozen=True)
class Connection:
    """Where to connect and with what.

    ``url_source`` says where the URL came from: ``"argument"``, ``"environment"``,
    ``"profile"`` or ``"default"`` (nothing configured it), for error messages.
    """

    url: str
    api_key: str | None
    ca_fingerprint: str | None
    url_source: str


def profile_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("hydracompute")) / "profile.json"


def load_profile() -> dict[str, str]:
    """What ``hydracompute login`` saved: url, api_key, ca_fingerprint (any may be absent)."""
    try:
        data = json.loads(profile_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(v) for k, v in data.items() if k in _PROFILE_FIELDS and v}


def save_profile(profile: Mapping[str, str]) -> Path:
    """Replace the login profile (mode 0600); returns its path."""
    path = profile_path()
    write_private(path, json.dumps(dict(profile), indent=2))
    return path


def resolve(
    url: str | None = None,
    api_key: str | None = None,
    ca_fingerprint: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """The connection given these arguments (``None`` or ``""``: not given), the
    environment (default: ``os.environ``) and the login profile."""
    environ = os.environ if environ is None else environ
    profile = load_profile()
    source = "argument"
    if not url:
        url, source = environ.get(URL_VARIABLE) or None, "environment"
    if not url:
        url, source = profile.get("url") or None, "profile"
    if not url:
        url, source = DEFAULT_URL, "default"
    url = url.rstrip("/")
    same_pool = url == profile.get("url", "").rstrip("/")
    api_key = (
        api_key
        or environ.get(API_KEY_VARIABLE)
        or (profile.get("api_key") if same_pool else None)
        or None
    )
    ca_fingerprint = (
        ca_fingerprint
        or environ.get(CA_FINGERPRINT_VARIABLE)
        or (profile.get("ca_fingerprint") if same_pool else None)
        or None
    )
    return Connection(url, api_key, ca_fingerprint, source)
