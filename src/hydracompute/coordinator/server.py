"""Starting a coordinator process: data directory, first credentials, TLS, listening socket.

On its first start a coordinator creates, in its data directory:

- ``admin.key``: an admin API key (mode 0600), printed once;
- ``join.token``: a join token for workers (mode 0600), in the join command it prints at
  every start (a new one is made if that one was revoked or expired);
- ``session.key``: the secret that signs browsers' session cookies (mode 0600);
- ``tls/``: its own certificate authority and server certificate (unless it was given a
  certificate, or told to run without TLS).
"""

from __future__ import annotations

import contextlib
import gc
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydracompute.carbon import IntensitySource
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.coordinator.collector import CollectionSchedule
from hydracompute.coordinator.protocol import HttpProtocol
from hydracompute.coordinator.service import DEFAULT_FORGET_WORKERS_AFTER_S
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.models import CredentialKind, Role
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import HydraError, Unauthorized
from hydracompute.private_files import write_private
from hydracompute.store import Store


class StartupError(HydraError):
    status = 500
    title = "Cannot start the coordinator"


ADMIN_KEY_FILE = "admin.key"
JOIN_TOKEN_FILE = "join.token"
#: Signs session cookies; kept so that signed-in browsers survive a restart.
SESSION_KEY_FILE = "session.key"


@dataclass
class ServerOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    store_url: str | None = None
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    tls: bool = True
    certfile: Path | None = None
    keyfile: Path | None = None
    anonymous_read: bool = False
    #: Adaptive verification for jobs that ask for no replication, and its tunables.
    adaptive: bool = False
    verification: VerificationPolicy = field(default_factory=VerificationPolicy)
    #: Workers not heard from for this long are removed; ``None``: never.
    forget_workers_after_s: float | None = DEFAULT_FORGET_WORKERS_AFTER_S
    metrics_public: bool = False
    #: Credit settings (watts per core, for the energy estimate of each grant).
    credit: CreditPolicy = field(default_factory=CreditPolicy)
    #: Where grid intensities come from (see :mod:`hydracompute.carbon.sources`; ``None``:
    #: the annual averages shipped with the package).
    carbon_source: IntensitySource | None = None


def session_secret(data_dir: Path) -> bytes:
    """The data directory's session-signing secret, created on first use."""
    path = data_dir / SESSION_KEY_FILE
    if not path.exists():
        write_private(path, secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


def ensure_credentials(store: Store, data_dir: Path, now: float) -> tuple[str | None, str]:
    """Make sure an admin key and a usable join token exist.

    Returns:
        The admin key's text if it was just created (else ``None``: it is in ``admin.key``
        or was replaced by the admin), and the join token's text.
    """
    created_admin = None
    if not store.credentials.has_admin(now):
        _, created_admin = store.credentials.issue(
            CredentialKind.API_KEY, "first admin", now, Role.ADMIN
        )
        write_private(data_dir / ADMIN_KEY_FILE, created_admin + "\n")
    token_file = data_dir / JOIN_TOKEN_FILE
    token = token_file.read_text().strip() if token_file.exists() else ""
    try:
        store.credentials.check(CredentialKind.JOIN_TOKEN, token, now)
    except Unauthorized:
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "default", now)
        write_private(token_file, token + "\n")
    return created_admin, token


def serve(options: ServerOptions, say: Callable[[str], None], clock: Callable[[], float]) -> None:
    """Run a coordinator until SIGINT or SIGTERM.

    Prints ``URL <base url>`` on stdout once it accepts connections (for scripts), and the
    rest through ``say``.

    Raises:
        ValueError: an unsupported store URL.
        OSError: the address cannot be listened on.
        HydraError: the store cannot be opened.
    """
    import uvicorn

    from hydracompute import tls
    from hydracompute.carbon.annual import AnnualSource
    from hydracompute.carbon.cache import intensity_view
    from hydracompute.coordinator.app import create_app
    from hydracompute.kinds import default_registry
    from hydracompute.store import open_store

    data_dir = options.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store_url = options.store_url or f"sqlite:///{data_dir / 'coordinator.db'}"
    store = open_store(
        store_url,
        default_registry(),
        options.config,
        verification=options.verification,
        adaptive=options.adaptive,
        credit=options.credit,
        carbon=intensity_view(options.carbon_source or AnnualSource()),
    )
    raise_open_files_limit()
    try:
        sock = _listen(options.host, options.port)
    except OSError:
        store.close()
        raise
    admin_key, join_token = ensure_credentials(store, data_dir, clock())
    ssl_options: dict[str, Any] = {}
    ca_pem = None
    fingerprint = ""
    if options.tls and options.certfile and options.keyfile:
        ssl_options = {"ssl_certfile": str(options.certfile), "ssl_keyfile": str(options.keyfile)}
    elif options.tls:
        try:
            paths = tls.ensure_certificates(data_dir / "tls", tls.default_names(options.host))
        except ValueError as exc:  # e.g. a CA certificate whose key is gone
            store.close()
            raise StartupError(f"TLS files in {data_dir / 'tls'}: {exc}") from exc
        ssl_options = tls.server_ssl_kwargs(paths)
        ca_pem = paths.ca_cert.read_bytes()
        fingerprint = paths.ca_fingerprint
    scheme = "https" if options.tls else "http"
    bound = sock.getsockname()[1]
    wildcard = options.host in ("0.0.0.0", "::", "")
    shown = f"[{options.host}]" if ":" in options.host else options.host
    base = f"{scheme}://{'127.0.0.1' if wildcard else shown}:{bound}"
    public = f"{scheme}://{socket.gethostname()}:{bound}" if wildcard else base
    say(f"Hydra Compute coordinator listening on {options.host}:{bound} (store: {store_url})")
    if not options.tls:
        say(
            "WARNING: plain HTTP (--insecure): credentials and results cross the network in "
            "clear; use this on loopback or a network you trust only."
        )
    if admin_key:
        say(f"Admin API key (shown once; saved in {data_dir / ADMIN_KEY_FILE}): {admin_key}")
    pin = f" --ca-fingerprint {fingerprint}" if fingerprint else ""
    # The token goes in the environment: a command line is visible to everyone in `ps`.
    join = f"HYDRACOMPUTE_JOIN_TOKEN={join_token} hydracompute worker {public}{pin}"
    say(f"Join workers with:  {join}")
    print(f"URL {base}", flush=True)
    security = SecuritySettings(
        anonymous_read=options.anonymous_read,
        metrics_public=options.metrics_public,
        secure_cookies=options.tls,
        session_secret=session_secret(data_dir),
    )
    app = create_app(
        store,
        clock,
        security=security,
        ca_pem=ca_pem,
        collection=CollectionSchedule(),
        forget_workers_after_s=options.forget_workers_after_s,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Held long-polls would otherwise delay the shutdown by a heartbeat.
            app.state.coordinator.release_waiters_soon()
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app,
            log_level="warning",
            # Forgets each request once answered: every connected worker holds a connection.
            http=HttpProtocol,
            timeout_graceful_shutdown=5,
            # Longer than a worker's longest pause between exchanges (its heartbeat), so
            # that workers keep their connection rather than open one (and, with TLS,
            # negotiate a session) for most exchanges.
            timeout_keep_alive=max(5, int(options.config.heartbeat_s * 2) + 1),
            **ssl_options,
        )
    )
    # Everything built so far (modules, the application, its schemas) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it (which
    # stalled every exchange for 50-110 ms a few times a minute under load).
    gc.collect()
    gc.freeze()
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    sys.stdout.flush()


#: Open files asked for when the hard limit allows any number.
WANTED_OPEN_FILES = 65536


def raise_open_files_limit() -> int:
    """Raise this process's limit of open files to its hard limit and return it: every
    connected worker holds a connection (a file), and many systems start processes with a
    soft limit of 1,024."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):  # e.g. a sandbox refusing it
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening before the URL is printed: whoever reads it can connect at once
        # (requests wait in the backlog until the server accepts them).
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock
