"""API keys and join tokens: issued once in clear, stored only as hashes.

A credential's text is ``<prefix>_<id>_<secret>`` (``hck_`` for API keys, ``hcj_`` for join
tokens), so the coordinator finds the record by id and compares hashes in constant time.
Secrets are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from hydracompute.core.fairshare import MAX_WEIGHT, MIN_WEIGHT
from hydracompute.core.models import Credential, CredentialKind, Role
from hydracompute.errors import InvalidRequest, NotFound, Unauthorized
from hydracompute.store.backend import Backend
from hydracompute.store.retry import retried_on_conflict

PREFIXES = {CredentialKind.API_KEY: "hck", CredentialKind.JOIN_TOKEN: "hcj"}
ID_PREFIXES = {CredentialKind.API_KEY: "k-", CredentialKind.JOIN_TOKEN: "t-"}
MAX_NAME_CHARS = 200
MAX_CREDENTIALS = 10_000


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_match(stored_hash: str, secret: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_secret(secret))


def unusable_reason(credential: Credential, now: float) -> str:
    """Why ``credential`` (not usable at ``now``) is refused, for the holder of its secret."""
    if credential.revoked:
        return "was revoked; ask the pool's admin for a new one"
    if credential.expires_s is not None and now >= credential.expires_s:
        return "has expired; ask the pool's admin for a new one"
    return (
        f"is used up: it allowed {credential.max_uses} enrolment(s), all made; ask the "
        "pool's admin for a new one (a worker that already joined rejoins without it)"
    )


class Credentials:
    """Issue, list, revoke and check the credentials kept by ``backend``.

    Every method runs in the caller's transaction if there is one, else in its own.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @retried_on_conflict
    def issue(
        self,
        kind: CredentialKind,
        name: str,
        now: float,
        role: Role | None = None,
        expires_s: float | None = None,
        max_uses: int | None = None,
        weight: float = 1.0,
    ) -> tuple[Credential, str]:
        """A new credential and its text, which is shown once and never stored.

        Args:
            weight: an API key's weight in the fair share between submitters.

        Raises:
            InvalidRequest: a role on a join token, no role on an API key, a name too
                long, an expiry in the past, a weight out of range, or too many
                credentials already.
        """
        if (kind is CredentialKind.API_KEY) != (role is not None):
            raise InvalidRequest("API keys have a role; join tokens have none")
        _check_weight(weight)
        if len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(f"names are at most {MAX_NAME_CHARS} characters")
        if expires_s is not None and expires_s <= now:
            raise InvalidRequest("the expiry must be in the future")
        if max_uses is not None and max_uses < 1:
            raise InvalidRequest("max_uses must be at least 1")
        secret = secrets.token_urlsafe(32)
        credential = Credential(
            cred_id=ID_PREFIXES[kind] + secrets.token_hex(8),
            kind=kind,
            name=name,
            secret_hash=hash_secret(secret),
            created_s=now,
            role=role,
            expires_s=expires_s,
            max_uses=max_uses,
            weight=weight,
        )
        with self.backend.transaction():
            usable = [c for c in self.backend.list_credentials(kind) if c.usable(now)]
            if len(usable) >= MAX_CREDENTIALS:
                raise InvalidRequest(f"at most {MAX_CREDENTIALS} usable credentials of a kind")
            self.backend.put_credential(credential)
        return credential, f"{PREFIXES[kind]}_{credential.cred_id}_{secret}"

    def list(self, kind: CredentialKind) -> list[Credential]:
        with self.backend.transaction(read_only=True):
            return self.backend.list_credentials(kind)

    @retried_on_conflict
    def revoke(self, kind: CredentialKind, cred_id: str) -> Credential:
        """Revoke a credential; it is refused from its next use on.

        Raises:
            NotFound: no credential of that kind and id.
        """
        with self.backend.transaction():
            credential = self.backend.get_credential(cred_id)
            if credential is None or credential.kind is not kind:
                raise NotFound(f"no {kind.value.replace('_', ' ')} {cred_id!r}")
            credential.revoked = True
            self.backend.put_credential(credential)
        return credential

    def set_weight(self, cred_id: str, weight: float) -> Credential:
        """Set an API key's weight in the fair share between submitters (its jobs' share
        of the pool, against others' weight 1 by default).

        Raises:
            NotFound: no API key of that id.
            InvalidRequest: a weight out of range.
        """
        _check_weight(weight)
        with self.backend.transaction():
            credential = self.backend.get_credential(cred_id)
            if credential is None or credential.kind is not CredentialKind.API_KEY:
                raise NotFound(f"no api key {cred_id!r}")
            credential.weight = float(weight)
            self.backend.put_credential(credential)
        return credential

    def check(self, kind: CredentialKind, text: str, now: float) -> Credential:
        """The usable credential whose text this is.

        Raises:
            Unauthorized: malformed, unknown or wrong (indistinguishably), or expired,
                used up or revoked (saying which: the caller proved it holds the secret).
        """
        prefix, _, rest = text.partition("_")
        cred_id, _, secret = rest.partition("_")
        with self.backend.transaction(read_only=True):
            credential = self.backend.get_credential(cred_id) if cred_id else None
        what = "API key" if kind is CredentialKind.API_KEY else "join token"
        if (
            prefix != PREFIXES[kind]
            or credential is None
            or credential.kind is not kind
            or not secrets_match(credential.secret_hash, secret)
        ):
            raise Unauthorized(f"unknown, wrong, expired or revoked {what}")
        if not credential.usable(now):
            # The caller holds the secret: it may know why its own credential is refused.
            raise Unauthorized(f"this {what} {unusable_reason(credential, now)}")
        return credential

    def get_usable(self, cred_id: str, now: float) -> Credential:
        """The API key ``cred_id`` if it is still usable (for signed sessions).

        Raises:
            Unauthorized: unknown, expired or revoked.
        """
        with self.backend.transaction(read_only=True):
            credential = self.backend.get_credential(cred_id)
        if (
            credential is None
            or credential.kind is not CredentialKind.API_KEY
            or not credential.usable(now)
        ):
            raise Unauthorized("the session's API key is expired or revoked; sign in again")
        return credential

    @retried_on_conflict
    def use(self, kind: CredentialKind, text: str, now: float) -> Credential:
        """:meth:`check` and count one use (join tokens may be limited in uses)."""
        with self.backend.transaction():
            credential = self.check(kind, text, now)
            credential.uses += 1
            self.backend.put_credential(credential)
        return credential

    def has_admin(self, now: float) -> bool:
        keys = self.list(CredentialKind.API_KEY)
        return any(k.role is Role.ADMIN and k.usable(now) for k in keys)


def _check_weight(weight: float) -> None:
    if isinstance(weight, bool) or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        problems = {"weight": f"must be between {MIN_WEIGHT} and {MAX_WEIGHT}"}
        raise InvalidRequest(f"weight: {problems['weight']}", errors=problems)
