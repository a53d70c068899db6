"""SIP digest authentication, server side (RFC 3261 §22.4 with RFC 2617/7616 ``qop=auth``).

aiosipua answers challenges as a client; a server has to issue and check them, which is
this module. Nonces are stateless: ``<issued-at>.<hmac>`` signed with a server key, so any
``runsip`` process can check a nonce another issued (behind a load balancer) and nothing is
stored per caller. A nonce older than ``NONCE_TTL_S`` is answered with a fresh challenge
marked ``stale=true`` (the client retries without asking its user).

MD5 and SHA-256 (RFC 7616) are accepted; the challenge offers MD5, which every SIP stack
speaks. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from aiosipua import parse_auth

NONCE_TTL_S = 300
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class Verdict(Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials: challenge (401)
    STALE = "stale"  # right password, old nonce: challenge again with stale=true (401)
    WRONG = "wrong"  # wrong user, password, realm or a forged nonce (403)


@dataclass(frozen=True, slots=True)
class DigestAuthority:
    realm: str
    key: bytes  # signs nonces; derive it from SECRET_KEY

    def nonce(self, now: float | None = None) -> str:
        issued = str(int(now if now is not None else time.time()))
        salt = secrets.token_hex(4)
        return f"{issued}.{salt}.{self._sign(issued, salt)}"

    def challenge(self, *, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` header value."""
        value = f'Digest realm="{self.realm}", nonce="{self.nonce()}", algorithm=MD5, qop="auth"'
        return value + ", stale=true" if stale else value

    def check(
        self,
        authorization: str | None,
        *,
        method: str,
        username: str,
        password: str,
        now: float | None = None,
    ) -> Verdict:
        if not authorization:
            return Verdict.MISSING
        try:
            credentials = parse_auth(authorization)
        except ValueError:
            return Verdict.WRONG
        if credentials.scheme.lower() != "digest":
            return Verdict.MISSING
        params = credentials.params
        algorithm = params.get("algorithm", "MD5").upper()
        hasher = _HASHES.get(algorithm)
        nonce, uri, response = (
            params.get("nonce", ""),
            params.get("uri", ""),
            params.get("response", ""),
        )
        if (
            hasher is None
            or not _same(params.get("username", ""), username)
            or params.get("realm", "") != self.realm
            or not nonce
            or not uri
            or not response
        ):
            return Verdict.WRONG
        issued = self._issued(nonce)
        if issued is None:
            return Verdict.WRONG

        def h(text: str) -> str:
            return hasher(text.encode()).hexdigest()

        ha1 = h(f"{username}:{self.realm}:{password}")
        ha2 = h(f"{method}:{uri}")
        qop = params.get("qop", "")
        if qop == "auth":
            nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
            if not nc or not cnonce:
                return Verdict.WRONG
            expected = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        elif qop:
            return Verdict.WRONG  # auth-int is not offered
        else:
            expected = h(f"{ha1}:{nonce}:{ha2}")
        if not _same(expected, response.lower()):
            return Verdict.WRONG
        current = now if now is not None else time.time()
        if not 0 <= current - issued <= NONCE_TTL_S:
            return Verdict.STALE
        return Verdict.OK

    def _sign(self, issued: str, salt: str) -> str:
        message = f"{self.realm}:{issued}:{salt}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    def _issued(self, nonce: str) -> int | None:
        parts = nonce.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        if not _same(self._sign(parts[0], parts[1]), parts[2]):
            return None
        return int(parts[0])


def _same(a: str, b: str) -> bool:
    """Constant-time, and for any text (``hmac.compare_digest`` refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode(), b.encode())
