"""Verified JWT claims as rate-limit keys (`key: jwt:company_id`).

A claim counts only from a token whose signature verifies with a key we hold, under an algorithm on
the explicit allow-list: `alg: none` is never on it, and the key is chosen by the algorithm's family
(HMAC secret for HS*, public keys for RS*/ES*), so a token cannot make us use an RSA public key as an
HMAC secret (algorithm confusion). `exp` and `nbf` are checked with `jwt.leeway`; `aud` and `iss`
when configured. Anything else is "no claim", with a reason the caller counts, never an exception.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from waitroom.config.fields import ConfigError
from waitroom.config.rules import JWTConfig

MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class ClaimResult:
    value: str | None
    reason: str
    """`ok`, or why there is no value: missing, malformed, algorithm, signature, expired, invalid, claim."""


def _read(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"jwt.{field}: cannot read {path}: {e.strerror or e}") from None


class ClaimVerifier:
    def __init__(self, config: JWTConfig, environ: Mapping[str, str] = os.environ) -> None:
        self.config = config
        self.algorithms = frozenset(config.algorithms)
        self._secret: bytes | None = None
        if config.secret_env and (secret := environ.get(config.secret_env)):
            self._secret = secret.encode()
        self._public_key: Any = None
        if config.public_key_file is not None:
            pem = _read(config.public_key_file, "public_key_file")
            try:
                self._public_key = pyjwt.PyJWK.from_json(json.dumps(_pem_to_jwk(pem))).key
            except (ValueError, pyjwt.PyJWTError) as e:
                raise ConfigError(f"jwt.public_key_file: not a usable public key: {e}") from None
        self._jwks: dict[str, Any] = {}
        if config.jwks_file is not None:
            try:
                jwks = pyjwt.PyJWKSet.from_json(_read(config.jwks_file, "jwks_file"))
            except (ValueError, pyjwt.PyJWTError) as e:
                raise ConfigError(f"jwt.jwks_file: not a usable JWKS: {e}") from None
            self._jwks = {k.key_id or "": k.key for k in jwks.keys}
        wants_secret = any(a.startswith("HS") for a in self.algorithms)
        if wants_secret and self._secret is None and not (self._public_key or self._jwks):
            raise ConfigError(
                f"jwt.secret_env: HS* algorithms need a secret; {config.secret_env or 'secret_env'} "
                "is not set"
            )

    def _key_for(self, header: Mapping[str, Any]) -> Any:
        alg = str(header.get("alg", ""))
        if alg.startswith("HS"):
            return self._secret
        kid = header.get("kid")
        if self._jwks:
            return self._jwks.get(str(kid) if kid is not None else "") or (
                next(iter(self._jwks.values())) if len(self._jwks) == 1 and kid is None else None
            )
        return self._public_key

    def claim(self, header_value: str | None, name: str, now: float | None = None) -> ClaimResult:
        """The claim `name` of the bearer token in `header_value`, if the token is valid at `now`
        (the decision's clock: the recorded time when flows are replayed; default the real time)."""
        token = (header_value or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not token:
            return ClaimResult(None, "missing")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():  # a JWS compact token is ASCII
            return ClaimResult(None, "malformed")
        try:
            header = pyjwt.get_unverified_header(token)
        except Exception:  # PyJWTError, and whatever an odd JOSE header makes it raise
            return ClaimResult(None, "malformed")
        alg = header.get("alg") if isinstance(header, dict) else None
        if (
            not isinstance(alg, str) or alg not in self.algorithms
        ):  # `none`, and anything the operator did not allow
            return ClaimResult(None, "algorithm")
        key = self._key_for(header)
        if key is None:
            return ClaimResult(None, "signature")
        try:
            payload = pyjwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                options={
                    "verify_aud": self.config.audience is not None,
                    # Times are checked below against the decision's clock, not the wall clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (pyjwt.InvalidSignatureError, pyjwt.InvalidKeyError):
            return ClaimResult(None, "signature")
        except pyjwt.PyJWTError:
            return ClaimResult(None, "invalid")
        except (ValueError, TypeError):  # a key of the wrong family for the algorithm
            return ClaimResult(None, "signature")
        except Exception:  # any other shape PyJWT did not expect: a token we cannot use
            return ClaimResult(None, "invalid")
        times = _times_valid(payload, time.time() if now is None else now, self.config.leeway)
        if times != "ok":
            return ClaimResult(None, times)
        value = payload.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            return ClaimResult(None, "claim")
        return ClaimResult(str(value), "ok")


def _times_valid(payload: Mapping[str, Any], now: float, leeway: float) -> str:
    """`exp`, `nbf` and `iat` as PyJWT checks them, at `now`: "ok", "expired" or "invalid"."""
    for field in ("exp", "nbf", "iat"):
        value = payload.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return "invalid"
    exp, nbf, iat = payload.get("exp"), payload.get("nbf"), payload.get("iat")
    if exp is not None and exp <= now - leeway:
        return "expired"
    if nbf is not None and nbf > now + leeway:
        return "invalid"
    if iat is not None and iat > now + leeway:
        return "invalid"
    return "ok"


def _pem_to_jwk(pem: str) -> dict[str, Any]:
    """A PEM public key as a JWK, so RSA and EC keys load through one path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = serialization.load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return dict(json.loads(RSAAlgorithm.to_jwk(key)))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return dict(json.loads(ECAlgorithm.to_jwk(key)))
    raise ValueError("only RSA and EC public keys are supported")
