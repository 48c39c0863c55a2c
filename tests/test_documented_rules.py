"""What docs/protocol.md states about the wire, checked against the code.

Each rule is re-implemented here from the document's own words, not imported: if the code or
the page changes alone, these tests fail.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, Role
from hydracompute.kinds import default_registry
from hydracompute.kinds.mandelbrot import tile_stride
from hydracompute.store import MemoryBackend, Store

DOCS = Path(__file__).resolve().parents[1] / "docs"
PROTOCOL = (DOCS / "protocol.md").read_text()


def documented_stride(n: int) -> int:
    """docs/protocol.md: "m, the integer nearest to n/φ (m = 1 when n < 2): s is the first
    of m, m−1, m+1, m−2, m+2, … that lies in [1, n] and is coprime with n"."""
    phi = (1 + math.sqrt(5)) / 2
    m = 1 if n < 2 else math.floor(n / phi + 0.5)
    sequence = itertools.chain(
        [m], itertools.chain.from_iterable((m - d, m + d) for d in range(1, n))
    )
    return next(c for c in sequence if 1 <= c <= n and math.gcd(c, n) == 1)


def test_the_documented_tile_stride_is_the_codes_for_every_tile_count() -> None:
    assert "`m, m−1, m+1, m−2, m+2, …`" in PROTOCOL
    differing = [n for n in range(1, 10_001) if documented_stride(n) != tile_stride(n)]
    assert differing == []


def test_the_documented_stride_example_holds() -> None:
    assert "for `n = 256`, `n/φ ≈ 158.2`, `m = 158` and `s = 157`" in PROTOCOL
    assert tile_stride(256) == documented_stride(256) == 157


def test_ids_have_as_many_hex_digits_as_documented() -> None:
    store = Store(MemoryBackend(), default_registry(), SchedulerConfig())
    key, _ = store.credentials.issue(CredentialKind.API_KEY, "k", 0.0, Role.ADMIN)
    token, _ = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", 0.0)
    worker, _ = store.enrol_worker("w", 1, ["pi"], 0.0)
    issued = {"k-": key.cred_id, "t-": token.cred_id, "w-": worker.worker_id}
    for prefix, issued_id in issued.items():
        stated = re.search(rf"`{prefix}` and (\d+) hex", PROTOCOL)
        assert stated is not None, f"docs/protocol.md no longer states the {prefix} ids"
        assert re.fullmatch(rf"{prefix}[0-9a-f]{{{stated.group(1)}}}", issued_id), issued_id
    # Every example id in the docs looks like one the coordinator issues.
    for page in DOCS.glob("*.md"):
        for example in re.findall(r"\b[ktw]-[0-9a-f]+\b", page.read_text()):
            assert re.fullmatch(r"[ktw]-[0-9a-f]{16}", example), (page.name, example)
