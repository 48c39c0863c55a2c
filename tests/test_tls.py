"""The coordinator's private CA, and CA pinning, over real TLS on loopback.

Certificates are generated for real (EC keys are cheap) and checked with ``cryptography``;
the handshake tests run a small threaded HTTPS server on 127.0.0.1 and talk to it with httpx.
Expiry is tested by passing ``now`` in, never by patching the clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hydracompute.errors import CoordinatorUnavailable
from hydracompute.tls import (
    CA_PATH,
    MAX_CA_BYTES,
    RENEW_BEFORE,
    SERVER_VALIDITY,
    CertificateMismatch,
    CertificatePaths,
    default_names,
    ensure_certificates,
    fetch_pinned_ca,
    fingerprint,
    parse_fingerprint,
    pinned_context,
    server_ssl_kwargs,
)

NAMES = ["localhost", "127.0.0.1", "::1", "coordinator.example"]
#: A name no test connects with: the handshake tests prove the host name is not checked.
ONLY_ELSEWHERE = ["coordinator.example"]
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def sans(cert: x509.Certificate) -> set[object]:
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


# --- certificate files -------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_files_are_created_with_private_modes(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "tls"
    paths = ensure_certificates(directory, NAMES)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(directory) == 0o700
    assert (mode(paths.ca_key), mode(paths.server_key)) == (0o600, 0o600)
    assert (mode(paths.ca_cert), mode(paths.server_cert)) == (0o644, 0o644)
    assert sorted(p.name for p in directory.iterdir()) == [
        "ca.key",
        "ca.pem",
        "server.key",
        "server.pem",
    ]  # no temporary files left behind
    assert paths.ca_cert == directory / "ca.pem"


def test_ca_is_a_p256_ca_for_ten_years(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, NAMES, now=T0)
    ca = load_chain(paths.ca_cert)[0]

    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.subject == ca.issuer
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str) and cn.startswith("Hydra Compute coordinator CA ")
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert 3640 <= (ca.not_valid_after_utc - T0).days <= 3660
    ca.verify_directly_issued_by(ca)


def test_server_certificate_is_issued_by_the_ca_for_every_name(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, NAMES, now=T0)
    ca = load_chain(paths.ca_cert)[0]
    server, chained_ca = load_chain(paths.server_cert)

    assert chained_ca == ca  # server.pem is the full chain
    server.verify_directly_issued_by(ca)
    assert sans(server) == {
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("coordinator.example"),
    }
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 725 <= (server.not_valid_after_utc - T0).days <= 735


def test_second_call_reuses_the_ca_and_the_server_certificate(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, NAMES, now=T0)
    before = {p: p.read_bytes() for p in (first.ca_cert, first.server_cert, first.server_key)}

    second = ensure_certificates(tmp_path, list(reversed(NAMES)), now=T0 + 100 * DAY)
    fewer = ensure_certificates(tmp_path, NAMES[:1], now=T0 + 200 * DAY)

    assert second == first == fewer
    assert {p: p.read_bytes() for p in before} == before


def test_a_new_name_reissues_the_server_certificate_with_the_same_ca(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, NAMES, now=T0)
    old_server = first.server_cert.read_bytes()

    second = ensure_certificates(tmp_path, [*NAMES, "10.0.0.7", "Pool.Example"], now=T0)

    assert second.ca_fingerprint == first.ca_fingerprint
    assert second.server_cert.read_bytes() != old_server
    server = load_chain(second.server_cert)[0]
    server.verify_directly_issued_by(load_chain(second.ca_cert)[0])
    assert {x509.IPAddress(ipaddress.ip_address("10.0.0.7")), x509.DNSName("pool.example")} <= (
        sans(server)
    )


def test_a_server_certificate_close_to_expiry_is_reissued(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, NAMES, now=T0)
    old_server = first.server_cert.read_bytes()

    ensure_certificates(tmp_path, NAMES, now=T0 + SERVER_VALIDITY - RENEW_BEFORE - DAY)
    assert first.server_cert.read_bytes() == old_server  # not yet within the renewal window

    later = T0 + SERVER_VALIDITY - RENEW_BEFORE + DAY
    second = ensure_certificates(tmp_path, NAMES, now=later)
    assert second.ca_fingerprint == first.ca_fingerprint
    server = load_chain(second.server_cert)[0]
    assert server.not_valid_after_utc > later + SERVER_VALIDITY - DAY
    server.verify_directly_issued_by(load_chain(second.ca_cert)[0])


def test_a_missing_server_key_or_a_foreign_server_certificate_is_replaced(
    tmp_path: Path,
) -> None:
    paths = ensure_certificates(tmp_path / "a", NAMES)
    other = ensure_certificates(tmp_path / "b", NAMES)
    ca = load_chain(paths.ca_cert)[0]

    paths.server_key.unlink()
    assert ensure_certificates(tmp_path / "a", NAMES) == paths
    load_chain(paths.server_cert)[0].verify_directly_issued_by(ca)

    paths.server_cert.write_bytes(other.server_cert.read_bytes())
    paths.server_key.write_bytes(other.server_key.read_bytes())
    assert ensure_certificates(tmp_path / "a", NAMES) == paths
    load_chain(paths.server_cert)[0].verify_directly_issued_by(ca)


def test_a_pinned_ca_is_never_replaced_silently(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, NAMES)
    paths.ca_key.unlink()
    with pytest.raises(ValueError, match=r"ca\.key is missing or does not belong"):
        ensure_certificates(tmp_path, NAMES)


def test_an_orphan_ca_key_from_an_interrupted_start_is_replaced(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, NAMES)
    paths.ca_cert.unlink()
    again = ensure_certificates(tmp_path, NAMES)
    assert again.ca_fingerprint != paths.ca_fingerprint
    load_chain(again.server_cert)[0].verify_directly_issued_by(load_chain(again.ca_cert)[0])


def test_names_are_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        ensure_certificates(tmp_path, [])


def test_default_names() -> None:
    names = default_names("0.0.0.0")
    assert names[:3] == ["localhost", "127.0.0.1", "::1"]
    assert socket.gethostname() in names
    assert len(names) == len(set(names))
    assert default_names("::") == names == default_names("")
    assert default_names("localhost") == names
    assert default_names("192.0.2.10") == [*names, "192.0.2.10"]


def test_server_ssl_kwargs(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, NAMES)
    assert server_ssl_kwargs(paths) == {
        "ssl_certfile": str(tmp_path / "server.pem"),
        "ssl_keyfile": str(tmp_path / "server.key"),
    }


# --- fingerprints ------------------------------------------------------------------------


def test_fingerprint_is_sha256_of_the_first_certificate(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, NAMES)
    ca_pem = paths.ca_cert.read_text()
    expected = "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem)).hexdigest()

    assert fingerprint(ca_pem.encode()) == expected == paths.ca_fingerprint
    assert fingerprint(paths.server_cert.read_bytes()) != expected  # the leaf comes first
    with pytest.raises(ValueError):
        fingerprint(b"not a certificate")


DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{DIGEST}",
        DIGEST,
        DIGEST.upper(),
        "SHA256:" + ":".join(DIGEST[i : i + 2] for i in range(0, 64, 2)).upper(),
        ":".join(DIGEST[i : i + 2] for i in range(0, 64, 2)),
        f"  sha256:{DIGEST}\n",
    ],
)
def test_parse_fingerprint_accepts_common_spellings(text: str) -> None:
    assert parse_fingerprint(text) == f"sha256:{DIGEST}"
    assert parse_fingerprint(parse_fingerprint(text)) == f"sha256:{DIGEST}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        DIGEST[:-1],
        DIGEST + "0",
        "g" * 64,
        f"sha1:{DIGEST}",
        f"sha256:{DIGEST}:",
        ":".join(DIGEST[i : i + 4] for i in range(0, 64, 4)),
        DIGEST[:32],
        f"sha256: {DIGEST}",
    ],
)
def test_parse_fingerprint_rejects_malformed_input(text: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        parse_fingerprint(text)


def test_pinned_context_trusts_only_the_first_certificate(tmp_path: Path) -> None:
    one = ensure_certificates(tmp_path / "one", NAMES).ca_cert.read_bytes()
    two = ensure_certificates(tmp_path / "two", NAMES).ca_cert.read_bytes()

    context = pinned_context(one + two)

    trusted = context.get_ca_certs()
    assert len(trusted) == 1  # not the system store, not the second certificate
    assert trusted == pinned_context(one).get_ca_certs() != pinned_context(two).get_ca_certs()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


# --- real TLS over loopback --------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    ca_pem: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path == CA_PATH:
            self._reply(self.server.ca_pem, "application/x-pem-file")
        elif self.path == "/big" + CA_PATH:
            self._reply(b"A" * (MAX_CA_BYTES + 1), "application/x-pem-file")
        elif self.path == "/ping":
            self._reply(b'{"ok": true}', "application/json")
        else:
            self.send_error(404)

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


Serve = Callable[[CertificatePaths], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start HTTPS servers on 127.0.0.1 with a coordinator's certificates; stop them after."""
    running: list[tuple[_Server, threading.Thread]] = []

    def start(paths: CertificatePaths) -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        files = server_ssl_kwargs(paths)
        context.load_cert_chain(files["ssl_certfile"], files["ssl_keyfile"])
        server = _Server(("127.0.0.1", 0), _Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.ca_pem = paths.ca_cert.read_bytes()
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return f"https://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def coordinator(tmp_path: Path) -> CertificatePaths:
    return ensure_certificates(tmp_path / "coordinator", ONLY_ELSEWHERE)


def test_fetch_pinned_ca_returns_the_ca_when_the_fingerprint_matches(
    coordinator: CertificatePaths, serve: Serve
) -> None:
    url = serve(coordinator)
    spelled_differently = coordinator.ca_fingerprint.removeprefix("sha256:").upper()

    assert fetch_pinned_ca(url, coordinator.ca_fingerprint) == coordinator.ca_cert.read_bytes()
    assert fetch_pinned_ca(url + "/", spelled_differently) == coordinator.ca_cert.read_bytes()


def test_fetch_pinned_ca_refuses_a_different_ca(
    coordinator: CertificatePaths, serve: Serve, tmp_path: Path
) -> None:
    impostor = ensure_certificates(tmp_path / "impostor", ONLY_ELSEWHERE)
    url = serve(impostor)

    with pytest.raises(CertificateMismatch) as info:
        fetch_pinned_ca(url, coordinator.ca_fingerprint)

    message = str(info.value)
    assert url in message
    assert impostor.ca_fingerprint in message and coordinator.ca_fingerprint in message
    assert "refused" in message and "intercepting" in message
    assert (info.value.status, info.value.title) == (400, "Certificate mismatch")


def test_fetch_pinned_ca_refuses_plain_http(coordinator: CertificatePaths) -> None:
    for url in ("http://127.0.0.1:8443", "127.0.0.1:8443", "https://"):
        with pytest.raises(ValueError, match="https://"):
            fetch_pinned_ca(url, coordinator.ca_fingerprint)


def test_fetch_pinned_ca_reports_an_unreachable_or_wrong_coordinator(
    coordinator: CertificatePaths, serve: Serve
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}"
    url = serve(coordinator)

    for base in (closed, url + "/not-a-coordinator", url + "/big"):
        with pytest.raises(CoordinatorUnavailable, match=base + CA_PATH):
            fetch_pinned_ca(base, coordinator.ca_fingerprint, timeout=5)


def test_pinned_client_connects_whatever_name_it_used(
    coordinator: CertificatePaths, serve: Serve
) -> None:
    url = serve(coordinator)
    port = url.rsplit(":", 1)[1]
    ca_pem = fetch_pinned_ca(url, coordinator.ca_fingerprint)

    with httpx.Client(verify=pinned_context(ca_pem), timeout=5) as client:
        for host in ("127.0.0.1", "localhost"):  # neither is in the certificate
            response = client.get(f"https://{host}:{port}/ping")
            assert response.json() == {"ok": True}

    # The control: with the host name checked, the same CA and server are refused.
    checking = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        httpx.Client(verify=checking, timeout=5) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.get(f"{url}/ping")
    assert any("mismatch" in str(cause) for cause in causes(info.value))


def test_pinned_client_refuses_a_server_of_another_ca(
    coordinator: CertificatePaths, serve: Serve, tmp_path: Path
) -> None:
    impostor = ensure_certificates(tmp_path / "impostor", ONLY_ELSEWHERE)
    url = serve(impostor)
    context = pinned_context(coordinator.ca_cert.read_bytes())

    with (
        httpx.Client(verify=context, timeout=5) as client,
        pytest.raises(httpx.ConnectError) as info,
    ):
        client.get(f"{url}/ping")

    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes(info.value))
