"""Starting a coordinator process: data directory, first credentials, TLS, listening socket.

The first coordinator to start on a store creates the pool's secrets and keeps them in the
store (see :mod:`.pool_secrets`); every coordinator also writes them to its data directory:

- ``admin.key``: an admin API key (mode 0600), printed once, by the first coordinator only;
- ``join.token``: the pool's join token (mode 0600), in the join command printed at every
  start (a new one is made if that one was revoked or expired);
- ``session.key``: the secret that signs browsers' session cookies (mode 0600);
- ``tls/``: the pool's certificate authority and this coordinator's server certificate
  (unless it was given a certificate, or told to run without TLS).
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydracompute.carbon import IntensitySource
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.coordinator.collector import CollectionSchedule
from hydracompute.coordinator.peers import Peers
from hydracompute.coordinator.pool_secrets import (
    ADMIN_KEY_FILE,
    JOIN_TOKEN_FILE,
    StartupError,
    ensure_credentials,
    session_secret,
    shared_ca,
)
from hydracompute.coordinator.protocol import ConnectionLimits, HttpProtocol
from hydracompute.coordinator.service import DEFAULT_FORGET_WORKERS_AFTER_S
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.fairshare import FairSharePolicy
from hydracompute.core.models import Role
from hydracompute.core.verification import VerificationPolicy
from hydracompute.store.content import DEFAULT_MAX_BLOB_BYTES

__all__ = [
    "ADMIN_KEY_FILE",
    "JOIN_TOKEN_FILE",
    "ServerOptions",
    "StartupError",
    "ensure_credentials",
    "serve",
    "session_secret",
]


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
    #: The fair share between submitters (the half-life of their usage).
    fair_share: FairSharePolicy = field(default_factory=FairSharePolicy)
    #: What one connection may send or hold before a request reaches the application.
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    #: The least role that may submit code (wasm jobs), and the largest blob uploaded.
    code_role: Role = Role.ADMIN
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    #: Where grid intensities come from (see :mod:`hydracompute.carbon.sources`; ``None``:
    #: the annual averages shipped with the package).
    carbon_source: IntensitySource | None = None
    #: The URL workers reach this coordinator at, listed for the pool (default: the one
    #: it listens on, with the host name for a wildcard address).
    public_url: str | None = None


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
    from hydracompute.store import StoreLocation, open_store

    data_dir = options.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    location = StoreLocation.parse(options.store_url or f"sqlite:///{data_dir / 'coordinator.db'}")
    store = open_store(
        location,
        default_registry(),
        options.config,
        verification=options.verification,
        adaptive=options.adaptive,
        credit=options.credit,
        fair_share=options.fair_share,
        carbon=intensity_view(options.carbon_source or AnnualSource()),
    )
    raise_open_files_limit()
    try:
        sock = _listen(options.host, options.port)
    except OSError:
        store.close()
        raise
    try:
        admin_key, join_token = ensure_credentials(store, data_dir, clock())
        secret = session_secret(store, data_dir)
        if options.tls and not (options.certfile and options.keyfile):
            shared_ca(store, data_dir / "tls")
    except BaseException:
        sock.close()
        store.close()
        raise
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
    # Registered before the join command is printed, which lists every live coordinator.
    peers = Peers(store, options.public_url or public, clock)
    peers.beat()
    say(
        f"Hydra Compute coordinator listening on {options.host}:{bound} (store: {location.shown()})"
    )
    if not options.tls:
        say(
            "WARNING: plain HTTP (--insecure): credentials and results cross the network in "
            "clear; use this on loopback or a network you trust only."
        )
    if admin_key:
        say(f"Admin API key (shown once; saved in {data_dir / ADMIN_KEY_FILE}): {admin_key}")
    pin = f" --ca-fingerprint {fingerprint}" if fingerprint else ""
    # The token goes in the environment: a command line is visible to everyone in `ps`.
    urls = " ".join(peers.urls())
    join = f"HYDRACOMPUTE_JOIN_TOKEN={join_token} hydracompute worker {urls}{pin}"
    say(f"Join workers with:  {join}")
    print(f"URL {base}", flush=True)
    security = SecuritySettings(
        anonymous_read=options.anonymous_read,
        metrics_public=options.metrics_public,
        secure_cookies=options.tls,
        session_secret=secret,
        code_role=options.code_role,
    )
    app = create_app(
        store,
        clock,
        security=security,
        ca_pem=ca_pem,
        collection=CollectionSchedule(),
        forget_workers_after_s=options.forget_workers_after_s,
        max_blob_bytes=options.max_blob_bytes,
        url=peers.url,
        coordinator_id=peers.coordinator_id,
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
            http=HttpProtocol.with_limits(options.connection_limits),
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
