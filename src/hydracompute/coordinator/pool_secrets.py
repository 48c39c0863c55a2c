"""The pool's secrets, made once at the first start of its first coordinator and kept in
its store, so that every coordinator sharing that store uses the same ones.

- the **certificate authority** that workers pin (each coordinator issues its own server
  certificate from it, for its own host names, into its data directory);
- the **default join token** that join commands print;
- the **session-signing secret**, so that a browser signed in on one coordinator is
  signed in on all;
- the **first admin API key** (kept hashed with the other credentials; its text is shown
  once, and saved only in the data directory of the coordinator that made it).

Each is also written to the coordinator's data directory, where it was kept before pools
could have several coordinators: a coordinator upgraded in place moves its own into the
store on its first start, so nothing its workers pinned changes.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from hydracompute import tls
from hydracompute.core.models import CredentialKind, Role
from hydracompute.errors import HydraError, Unauthorized
from hydracompute.private_files import write_atomic, write_private
from hydracompute.store import Store

ADMIN_KEY_FILE = "admin.key"
JOIN_TOKEN_FILE = "join.token"
#: Signs session cookies; kept so that signed-in browsers survive a restart.
SESSION_KEY_FILE = "session.key"
#: Names of the settings in the store.
CA_SETTING = "tls.ca"
JOIN_TOKEN_SETTING = "join_token"
SESSION_SETTING = "session_key"


class StartupError(HydraError):
    status = 500
    title = "Cannot start the coordinator"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def session_secret(store: Store, data_dir: Path) -> bytes:
    """The pool's session-signing secret: the store's, else this data directory's (moved
    into the store), else a new one."""
    path = data_dir / SESSION_KEY_FILE
    kept = store.sharing.setting_once(SESSION_SETTING, _read(path) or secrets.token_hex(32))
    if _read(path) != kept:
        write_private(path, kept + "\n")
    return bytes.fromhex(kept)


def ensure_credentials(store: Store, data_dir: Path, now: float) -> tuple[str | None, str]:
    """Make sure the pool has an admin key and a usable default join token.

    Returns:
        The admin key's text if it was just created (else ``None``: it is in ``admin.key``
        of the coordinator that made it, or was replaced by the admin), and the join
        token's text.
    """
    created_admin = None
    if not store.credentials.has_admin(now):
        _, created_admin = store.credentials.issue(
            CredentialKind.API_KEY, "first admin", now, Role.ADMIN
        )
        write_private(data_dir / ADMIN_KEY_FILE, created_admin + "\n")
    token_file = data_dir / JOIN_TOKEN_FILE
    token = store.sharing.setting(JOIN_TOKEN_SETTING) or _read(token_file)
    try:
        store.credentials.check(CredentialKind.JOIN_TOKEN, token, now)
    except Unauthorized:
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "default", now)
    if store.sharing.setting(JOIN_TOKEN_SETTING) != token:
        store.sharing.replace_setting(JOIN_TOKEN_SETTING, token)
    if _read(token_file) != token:
        write_private(token_file, token + "\n")
    return created_admin, token


def shared_ca(store: Store, directory: Path) -> None:
    """Put the pool's CA in ``directory`` (``ca.pem``, ``ca.key``) for
    :func:`tls.ensure_certificates`: the store's, else the one this directory holds (moved
    into the store), else a new one.

    Raises:
        StartupError: this directory holds another CA than the pool's (its workers pinned
            one the other coordinators do not have): a CA is never silently replaced.
    """
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    local = _read(cert_path)
    stored = store.sharing.setting(CA_SETTING)
    if stored is None:
        if local and not _read(key_path):
            raise StartupError(f"{key_path} is missing: restore it beside {cert_path}")
        if local:
            candidate = {"cert": local + "\n", "key": _read(key_path) + "\n"}
        else:
            cert, key = tls.new_ca_pems()
            candidate = {"cert": cert.decode("ascii"), "key": key.decode("ascii")}
        stored = store.sharing.setting_once(CA_SETTING, json.dumps(candidate))
    ca = json.loads(stored)
    if local and local != ca["cert"].strip():
        raise StartupError(
            f"{cert_path} is another certificate authority than the one of the pool whose "
            "store this coordinator uses; move the tls folder away to use the pool's "
            "(workers that pinned this one must then pin the pool's fingerprint)"
        )
    if not local:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(key_path, ca["key"].encode("ascii"), 0o600)
        write_atomic(cert_path, ca["cert"].encode("ascii"), 0o644)
