"""A coordinator's first start: admin key, join token, session secret and CA, kept in its
store (shared by every coordinator of the pool) and its data directory."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hydracompute import tls
from hydracompute.coordinator.pool_secrets import StartupError, shared_ca
from hydracompute.coordinator.server import (
    ADMIN_KEY_FILE,
    JOIN_TOKEN_FILE,
    ensure_credentials,
    session_secret,
)
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, Role
from hydracompute.store import SQLiteBackend, Store
from tests.sum_kind import sum_registry


def open_store(path: Path) -> Store:
    return Store(SQLiteBackend(path / "coordinator.db"), sum_registry(), SchedulerConfig())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_usable_private_credentials(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    admin, token = ensure_credentials(store, tmp_path, now=0.0)
    assert admin is not None
    assert (tmp_path / ADMIN_KEY_FILE).read_text().strip() == admin
    assert (tmp_path / JOIN_TOKEN_FILE).read_text().strip() == token
    assert mode(tmp_path / ADMIN_KEY_FILE) == mode(tmp_path / JOIN_TOKEN_FILE) == 0o600
    assert store.credentials.check(CredentialKind.API_KEY, admin, 1.0).role is Role.ADMIN
    assert store.credentials.check(CredentialKind.JOIN_TOKEN, token, 1.0)


def test_later_starts_keep_them_and_replace_a_revoked_token(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    _, token = ensure_credentials(store, tmp_path, now=0.0)
    store.close()
    store = open_store(tmp_path)
    assert ensure_credentials(store, tmp_path, now=1.0) == (None, token)
    token_id = token.split("_")[1]
    store.credentials.revoke(CredentialKind.JOIN_TOKEN, token_id)
    admin, fresh = ensure_credentials(store, tmp_path, now=2.0)
    assert admin is None and fresh != token
    assert (tmp_path / JOIN_TOKEN_FILE).read_text().strip() == fresh


def test_session_secret_survives_restarts(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first = session_secret(store, tmp_path)
    assert len(first) == 32
    store.close()
    assert session_secret(open_store(tmp_path), tmp_path) == first


def test_a_second_coordinator_on_the_same_store_reuses_the_pools_secrets(
    tmp_path: Path,
) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first, second = open_store(tmp_path), open_store(tmp_path)  # one file, two connections
    admin, token = ensure_credentials(first, first_dir, now=0.0)
    shared_ca(first, first_dir / "tls")
    assert ensure_credentials(second, second_dir, now=1.0) == (None, token)
    assert (second_dir / JOIN_TOKEN_FILE).read_text().strip() == token
    assert not (second_dir / ADMIN_KEY_FILE).exists()  # shown once, by the first only
    assert session_secret(second, second_dir) == session_secret(first, first_dir)
    shared_ca(second, second_dir / "tls")
    paths = [tls.ensure_certificates(d / "tls", ["127.0.0.1"]) for d in (first_dir, second_dir)]
    assert paths[0].ca_fingerprint == paths[1].ca_fingerprint
    # Each serves a certificate of its own, issued by the pool's CA.
    assert paths[0].server_cert.read_bytes() != paths[1].server_cert.read_bytes()
    # The admin key the first made works through the second.
    assert second.credentials.check(CredentialKind.API_KEY, admin, 2.0).role is Role.ADMIN


def test_an_upgraded_coordinator_moves_its_own_ca_into_the_store(tmp_path: Path) -> None:
    before = tls.ensure_certificates(tmp_path / "tls", ["127.0.0.1"])  # as before pools
    store = open_store(tmp_path)
    shared_ca(store, tmp_path / "tls")
    elsewhere = tmp_path / "other"
    shared_ca(store, elsewhere / "tls")
    after = tls.ensure_certificates(elsewhere / "tls", ["127.0.0.1"])
    assert after.ca_fingerprint == before.ca_fingerprint


def test_a_coordinator_with_another_ca_is_refused_on_a_pools_store(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    shared_ca(store, tmp_path / "a" / "tls")
    tls.ensure_certificates(tmp_path / "b" / "tls", ["127.0.0.1"])  # a CA of its own
    with pytest.raises(StartupError, match="another certificate authority"):
        shared_ca(store, tmp_path / "b" / "tls")


def test_the_coordinator_does_not_load_the_compute_kernels() -> None:
    # numba is about 130 MB of a process's memory; only compute processes run kernels. The
    # coordinator's application and the built-in kinds (checks, merges) must not import it.
    code = (
        "import sys\n"
        "from hydracompute.coordinator.app import create_app\n"
        "from hydracompute.kinds import default_registry\n"
        "from hydracompute.worker.agent import WorkerAgent\n"
        "kinds = default_registry()\n"
        "kinds.get('pi').validate({'samples': 10})\n"
        "kinds.get('mandelbrot').validate({'width': 64, 'height': 64})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(sys.platform == "win32", reason="no open files limit on Windows")
def test_the_coordinator_raises_its_open_files_limit() -> None:
    code = (
        "import resource\n"
        "from hydracompute.coordinator.server import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    reported, actual = map(int, out.stdout.split())
    assert reported == actual > 256
