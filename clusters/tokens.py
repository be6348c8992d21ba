"""Short-lived Slurm JWTs: minted for one POSIX user on one cluster, never shown or logged."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jwt

# POSIX portable user names as useradd accepts them; anything else never reaches a token.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Reuse a cached token only while it has this share of its life left, so a request
# that starts with it never reaches slurmrestd with an expired one.
REUSE_WHILE_LEFT = 0.5
# Key material from a remote store is re-read this often, so a rotated key takes effect.
KEY_CACHE_SECONDS = 300


class TokenRefused(Exception):
    """No token is minted for this user on this cluster; the message says why."""


class KeyUnavailable(Exception):
    """The cluster's signing key cannot be read; the message says where it was looked for."""


class SigningCluster(Protocol):
    pk: int | None
    slug: str
    slurm_user: str
    jwt_key_source: str
    jwt_key_ref: str
    jwt_algorithm: str
    jwt_key_id: str
    jwt_include_ids: bool
    token_lifetime: int
    aws_region: str


@dataclass(frozen=True)
class _Cached:
    token: str
    expires: float
    lifetime: int


_tokens: dict[tuple, _Cached] = {}
_keys: dict[tuple, tuple[bytes, float]] = {}
_lock = threading.Lock()


def encode(
    key: bytes,
    user_name: str,
    *,
    lifetime: int,
    algorithm: str = "HS256",
    key_id: str = "",
    uid: int | None = None,
    gid: int | None = None,
    now: float | None = None,
) -> str:
    """One signed token in the claims Slurm's auth/jwt reads (`sun`, `exp` is mandatory)."""
    issued = int(now if now is not None else time.time())
    claims: dict = {"iat": issued, "exp": issued + lifetime, "sun": user_name}
    if uid is not None:
        # AWS PCS reads the identity from the token rather than from its own name service.
        claims["uid"] = uid
        claims["id"] = {"uid": uid, "gid": gid if gid is not None else uid, "name": user_name}
    if gid is not None:
        claims["gid"] = gid
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def mint(cluster: SigningCluster, user_name: str, *, uid: int | None = None, gid: int | None = None) -> str:
    """A token for `user_name` on `cluster`, reused until half its life has passed.

    Refuses root and the cluster's SlurmUser: whoever holds one of their tokens
    can act as anyone on the cluster.
    """
    if not USER_NAME.match(user_name or ""):
        raise TokenRefused(f"{user_name!r} is not a valid POSIX user name.")
    if user_name in {"root", cluster.slurm_user} or uid == 0:
        raise TokenRefused(f"Tokens are never minted for {user_name!r} on {cluster.slug}.")
    if not cluster.jwt_include_ids:
        uid = gid = None
    key = signing_key(cluster)
    cache_key = (cluster.pk, cluster.slug, hashlib.sha256(key).digest(), user_name, uid, gid)
    now = time.time()
    with _lock:
        cached = _tokens.get(cache_key)
        fresh = cached and cached.expires - now > cached.lifetime * REUSE_WHILE_LEFT
        if fresh and cached.lifetime == cluster.token_lifetime:
            return cached.token
    token = encode(
        key,
        user_name,
        lifetime=cluster.token_lifetime,
        algorithm=cluster.jwt_algorithm,
        key_id=cluster.jwt_key_id,
        uid=uid,
        gid=gid,
        now=now,
    )
    with _lock:
        _tokens[cache_key] = _Cached(token, now + cluster.token_lifetime, cluster.token_lifetime)
    return token


def forget(cluster: SigningCluster | None = None) -> None:
    """Drop cached tokens and keys (all, or one cluster's), e.g. after the key was rotated."""
    with _lock:
        for store in (_tokens, _keys):
            for k in [k for k in store if cluster is None or k[0] == cluster.pk]:
                del store[k]


def signing_key(cluster: SigningCluster) -> bytes:
    """The key bytes: HS256 takes the raw key file's bytes, RS256 a PEM private key."""
    ref = (cluster.pk, cluster.jwt_key_source, cluster.jwt_key_ref, cluster.aws_region)
    now = time.monotonic()
    with _lock:
        hit = _keys.get(ref)
        if hit and now - hit[1] < KEY_CACHE_SECONDS:
            return hit[0]
    key = _read_key(cluster)
    if not key:
        raise KeyUnavailable(f"The JWT key for {cluster.slug} is empty.")
    with _lock:
        _keys[ref] = (key, now)
    return key


def _read_key(cluster: SigningCluster) -> bytes:
    source, ref = cluster.jwt_key_source, cluster.jwt_key_ref
    if source == "file":
        try:
            return Path(ref).read_bytes()
        except OSError as e:
            raise KeyUnavailable(
                f"Cannot read the JWT key file {ref} for {cluster.slug}: {e.strerror}."
            ) from None
    if source == "env":
        value = os.environ.get(ref)
        if value is None:
            raise KeyUnavailable(f"The environment variable {ref} (JWT key of {cluster.slug}) is not set.")
        if value.lstrip().startswith("-----BEGIN"):
            return value.encode()
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise KeyUnavailable(f"The environment variable {ref} is not valid base64.") from None
    if source == "aws_secret":
        return _read_secret(cluster)
    raise KeyUnavailable(f"Unknown JWT key source {source!r} for {cluster.slug}.")


def _read_secret(cluster: SigningCluster) -> bytes:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("secretsmanager", region_name=cluster.aws_region or None)
        answer = client.get_secret_value(SecretId=cluster.jwt_key_ref)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise KeyUnavailable(
            f"AWS Secrets Manager refused the JWT key {cluster.jwt_key_ref} for {cluster.slug}: {code}."
        ) from None
    except BotoCoreError as e:
        raise KeyUnavailable(f"AWS Secrets Manager could not be reached for {cluster.slug}: {e}.") from None
    if "SecretBinary" in answer:
        return bytes(answer["SecretBinary"])
    text = answer.get("SecretString", "")
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyUnavailable(f"The secret {cluster.jwt_key_ref} is neither binary, PEM nor base64.") from None
