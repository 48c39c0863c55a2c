"""TLS for a coordinator with its own certificate authority, and CA pinning for its peers.

The coordinator creates a private CA on first start and a server certificate signed by it
(:func:`ensure_certificates`), and prints the CA's fingerprint. A worker or client given
that fingerprint fetches the CA once (:func:`fetch_pinned_ca`) and from then on trusts that
CA and nothing else (:func:`pinned_context`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import re
import secrets
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hydracompute.errors import CoordinatorUnavailable, HydraError
from hydracompute.private_files import write_atomic

#: Where a coordinator serves its CA certificate (PEM).
CA_PATH = "/api/v1/tls/ca.pem"
CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=730)
RENEW_BEFORE = dt.timedelta(days=30)
# Certificates start an hour in the past so a worker whose clock is a little behind accepts them.
CLOCK_SKEW = dt.timedelta(hours=1)
# The unverified first fetch reads an untrusted body; a CA certificate is well under this.
MAX_CA_BYTES = 64 * 1024
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class CertificateMismatch(HydraError):
    """The coordinator presented a CA whose fingerprint is not the one the user pinned."""

    status = 400
    title = "Certificate mismatch"


@dataclass(frozen=True)
class CertificatePaths:
    """The coordinator's TLS files and the fingerprint workers must pin."""

    ca_cert: Path
    ca_key: Path
    #: The server certificate followed by the CA certificate (the full chain).
    server_cert: Path
    server_key: Path
    ca_fingerprint: str


def ensure_certificates(
    directory: Path, names: Sequence[str], *, now: dt.datetime | None = None
) -> CertificatePaths:
    """Create or reuse the coordinator's CA, and (re-)issue its server certificate if needed.

    :param directory: holds ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``; created
        with mode 0700 if missing. Private keys are written with mode 0600.
    :param names: host names and IP addresses the server certificate must cover.
    :param now: the current time (timezone-aware); defaults to the clock.
    :raises ValueError: ``names`` is empty or holds an invalid name, or ``ca.pem`` exists
        but ``ca.key`` is missing or does not belong to it (a CA workers may have pinned
        is never silently replaced).
    :returns: the four paths and the CA fingerprint.

    The CA is created once. The server certificate is re-issued by the same CA when it is
    missing, expires within :data:`RENEW_BEFORE`, lacks one of ``names``, was not issued
    by this CA, or does not match ``server.key``.
    """
    if not names:
        raise ValueError("the server certificate needs at least one host name or address")
    now = now or dt.datetime.now(dt.UTC)
    wanted = list(dict.fromkeys(_general_name(name) for name in names))
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
    server_cert_path, server_key_path = directory / "server.pem", directory / "server.key"
    # ca.key is written before ca.pem, so a key without a certificate is an interrupted
    # first start whose CA nobody can have pinned yet: replacing it is safe.
    if ca_cert_path.exists():
        ca_key, ca_cert = _load_ca(ca_cert_path, ca_key_path)
    else:
        ca_key, ca_cert = _new_ca(now)
        write_atomic(ca_key_path, _key_pem(ca_key), 0o600)
        write_atomic(ca_cert_path, _cert_pem(ca_cert), 0o644)
    if _needs_server_certificate(server_cert_path, server_key_path, ca_cert, wanted, now):
        server_key, server_cert = _new_server_certificate(ca_key, ca_cert, wanted, now)
        write_atomic(server_key_path, _key_pem(server_key), 0o600)
        write_atomic(server_cert_path, _cert_pem(server_cert) + _cert_pem(ca_cert), 0o644)
    ca_fingerprint = fingerprint(_cert_pem(ca_cert))
    return CertificatePaths(
        ca_cert_path, ca_key_path, server_cert_path, server_key_path, ca_fingerprint
    )


def new_ca_pems(now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A new certificate authority as ``(certificate PEM, private key PEM)``, for a pool
    whose coordinators keep their CA in their shared store."""
    key, cert = _new_ca(now or dt.datetime.now(dt.UTC))
    return _cert_pem(cert), _key_pem(key)


def default_names(host: str) -> list[str]:
    """Names for the server certificate: loopback, this machine's names, and ``host``.

    ``host`` (the address the coordinator binds) is added unless it is a wildcard.
    """
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    if host not in _WILDCARD_HOSTS:
        names.append(host)
    return list(dict.fromkeys(name for name in names if name))


def fingerprint(ca_pem: bytes) -> str:
    """``"sha256:"`` and the lowercase hex SHA-256 of the first certificate's DER encoding.

    :raises ValueError: ``ca_pem`` holds no PEM certificate.
    """
    cert = x509.load_pem_x509_certificates(ca_pem)[0]
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def parse_fingerprint(text: str) -> str:
    """The canonical form (as :func:`fingerprint` returns) of a fingerprint a user typed.

    Accepts an optional ``sha256:`` prefix, either case, and ``:`` between byte pairs.

    :raises ValueError: ``text`` is not a SHA-256 fingerprint.
    """
    digest = text.strip().lower().removeprefix("sha256:")
    if ":" in digest:
        pairs = digest.split(":")
        digest = "".join(pairs) if all(len(pair) == 2 for pair in pairs) else ""
    if not _HEX_DIGEST.fullmatch(digest):
        raise ValueError(
            f"not a SHA-256 fingerprint: {text[:120]!r}; expected 'sha256:' followed by "
            "64 hex digits, optionally written as byte pairs separated by ':'"
        )
    return "sha256:" + digest


def pinned_context(ca_pem: bytes) -> ssl.SSLContext:
    """A client context trusting only the first certificate in ``ca_pem`` (TLS 1.2 or later).

    :raises ValueError: ``ca_pem`` holds no PEM certificate.
    """
    ca_cert = x509.load_pem_x509_certificates(ca_pem)[0]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No host-name check, on purpose. The CA is private to one coordinator and pinned by
    # fingerprint, so every certificate it signed is that coordinator, whatever name or
    # address the worker used to reach it (behind NAT, after an IP change, by a name that
    # was not known when the certificate was issued). The chain is still verified.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # Only the pinned certificate (DER), never the system store or other certs in the PEM.
    context.load_verify_locations(cadata=ca_cert.public_bytes(Encoding.DER))
    return context


def fetch_pinned_ca(url: str, expected: str, timeout: float = 10.0) -> bytes:
    """Fetch the coordinator's CA certificate and return it if it has the expected fingerprint.

    :param url: the coordinator's base URL; must be ``https://``.
    :param expected: the fingerprint the user was given, in any form
        :func:`parse_fingerprint` accepts.
    :param timeout: seconds for connecting and for each read.
    :raises ValueError: ``url`` is not https, or ``expected`` is not a fingerprint.
    :raises CoordinatorUnavailable: the coordinator cannot be reached or serves no CA.
    :raises CertificateMismatch: the CA served has a different fingerprint.
    :returns: the CA certificate (PEM), to pass to :func:`pinned_context`.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError(
            f"refusing {url!r}: the coordinator must be reached at an https:// URL "
            "for its certificate authority to be pinned"
        )
    want = parse_fingerprint(expected)
    ca_url = url.rstrip("/") + CA_PATH
    # Unverified on purpose: we do not have the CA yet, and nothing fetched here is trusted
    # until its fingerprint matches the one the user supplied out of band. A man in the
    # middle can only make this call fail; every later connection verifies the server
    # against the pinned CA (pinned_context).
    try:
        with (
            httpx.Client(verify=False, timeout=timeout) as client,
            client.stream("GET", ca_url) as response,
        ):
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_CA_BYTES:
                    raise CoordinatorUnavailable(
                        f"{ca_url} sent more than {MAX_CA_BYTES} bytes; not a CA certificate"
                    )
    except httpx.HTTPError as exc:
        raise CoordinatorUnavailable(
            f"cannot fetch the CA certificate from {ca_url}: {exc}"
        ) from exc
    ca_pem = bytes(body)
    try:
        got = fingerprint(ca_pem)
    except ValueError as exc:
        raise CoordinatorUnavailable(f"{ca_url} did not serve a PEM certificate") from exc
    if got != want:
        raise CertificateMismatch(
            f"the coordinator at {url} presented CA fingerprint {got}, but {want} was "
            "expected, so the connection is refused (the fingerprint is wrong, or someone "
            "is intercepting the connection)",
            presented=got,
            expected=want,
        )
    return ca_pem


def verification(url: str, ca_fingerprint: str | None) -> ssl.SSLContext | bool:
    """How a worker or client should check the coordinator at ``url``: against its own
    pinned CA when a fingerprint is given (fetched and checked now), else against the
    default trusted authorities — httpx's (certifi's bundle, or ``SSL_CERT_FILE``) — for a
    coordinator with a public certificate, or plain http.

    :raises CertificateMismatch: the coordinator's CA has another fingerprint.
    :raises CoordinatorUnavailable: the CA could not be fetched.
    :raises ValueError: a fingerprint with a non-https URL, or a malformed fingerprint.
    """
    if ca_fingerprint:
        return pinned_context(fetch_pinned_ca(url, ca_fingerprint))
    return True


def is_certificate_error(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a failed certificate verification (not transient)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def server_ssl_kwargs(paths: CertificatePaths) -> dict[str, str]:
    """Keyword arguments for ``uvicorn.Config`` serving ``paths``' server certificate chain."""
    return {"ssl_certfile": str(paths.server_cert), "ssl_keyfile": str(paths.server_key)}


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        # DNS names are case-insensitive; SANs hold them in ASCII (IDNA) form.
        return x509.DNSName(name.lower().encode("idna").decode("ascii"))


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    with contextlib.suppress(FileNotFoundError):
        ca_key = load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(ca_key, ec.EllipticCurvePrivateKey) and _same_key(ca_key, ca_cert):
            return ca_key, ca_cert
    raise ValueError(
        f"{key_path} is missing or does not belong to {cert_path}; restore it, or "
        "delete both to create a new CA (every worker must then pin the new fingerprint)"
    )


def _needs_server_certificate(
    cert_path: Path,
    key_path: Path,
    ca: x509.Certificate,
    wanted: list[x509.GeneralName],
    now: dt.datetime,
) -> bool:
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        key = load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return True
    expiring = cert.not_valid_after_utc - now < RENEW_BEFORE
    return expiring or not set(wanted) <= set(sans) or not _same_key(key, cert)


def _new_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    # The random suffix tells apart the CAs of different coordinators in trust-store listings.
    cn = f"Hydra Compute coordinator CA {secrets.token_hex(4)}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(name, name, key.public_key(), now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: list[x509.GeneralName],
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hydra Compute coordinator")])
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), now, SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _same_key(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)
