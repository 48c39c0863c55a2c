"""The coordinator's certificate authority as a worker pinned it, kept between runs.

The first run is given the CA's fingerprint (``--ca-fingerprint``); it fetches the CA,
checks it against the fingerprint and keeps it in a file next to the worker's identity
file. Later runs trust that kept CA, and nothing else, without a fingerprint. A run given a
fingerprint that the kept CA does not have (the pool's admin made a new CA) fetches and
checks the CA again, and keeps the new one.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from hydracompute import tls
from hydracompute.private_files import write_private

log = logging.getLogger("hydracompute.worker")
SUFFIX = ".ca.pem"


def pinned_ca_path(identity_file: Path) -> Path:
    """Where the worker using ``identity_file`` keeps its coordinator's CA."""
    return identity_file.with_name(identity_file.stem + SUFFIX)


def kept_ca(path: Path) -> bytes | None:
    """The CA kept in ``path``, if it holds a readable certificate."""
    try:
        pem = path.read_bytes()
        tls.fingerprint(pem)
    except (OSError, ValueError):
        return None
    return pem


def verification(url: str, ca_fingerprint: str | None, ca_file: Path) -> ssl.SSLContext | bool:
    """How the worker checks the coordinator at ``url`` (see :func:`tls.verification`),
    pinning the CA kept in ``ca_file`` when no fingerprint is given.

    Raises:
        CertificateMismatch: the coordinator's CA has another fingerprint.
        CoordinatorUnavailable: the CA had to be fetched and could not be.
        ValueError: a fingerprint with a non-https URL, or a malformed fingerprint.
    """
    https = url.lower().startswith("https://")
    kept = kept_ca(ca_file) if https else None
    if ca_fingerprint:
        wanted = tls.parse_fingerprint(ca_fingerprint)
        if kept is not None and tls.fingerprint(kept) == wanted:
            return tls.pinned_context(kept)
        pem = tls.fetch_pinned_ca(url, wanted)
        if kept is not None:
            log.warning("the coordinator's CA changed; pinned the new one (%s)", wanted)
        write_private(ca_file, pem.decode("ascii"))
        return tls.pinned_context(pem)
    if kept is not None:
        log.info("trusting the coordinator's CA pinned earlier (%s)", tls.fingerprint(kept))
        return tls.pinned_context(kept)
    return True
