"""KMS-encrypted Session Manager sessions, client side (docs/ssm-data-channel.md §5.13).

When the account's Session Manager preferences name a KMS key, the agent asks for encryption in its
handshake. The client makes a 64-byte data key with kms:GenerateDataKey under the session's encryption
context and hands the agent the encrypted copy; the agent decrypts it with kms:Decrypt and the same
context. The first half of the key is the agent's sealing key, the second half the client's; every
terminal payload is then AES-256-GCM sealed (nonce ‖ ciphertext ‖ tag, no associated data).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import messages as m

if TYPE_CHECKING:
    from .session import SessionManager

DATA_KEY_BYTES = 64
KEY_BYTES = DATA_KEY_BYTES // 2
NONCE_BYTES = 12
TAG_BYTES = 16

# The agent waits 15 s for the handshake response; the KMS call must end well inside that, so the
# person reads our sentence rather than the agent's bare "handshake timed out".
KMS_DEADLINE = 10.0
_KMS_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})

# What each side seals: the agent its terminal output, the client only keystrokes. Size, Flag and the
# handshake's own JSON stay readable, as the agent expects them.
SEALED_FROM_AGENT = frozenset({m.PayloadType.OUTPUT, m.PayloadType.STDERR, m.PayloadType.EXIT_CODE})
SEALED_FROM_CLIENT = frozenset({m.PayloadType.OUTPUT})

CONTEXT_SESSION = "aws:ssm:SessionId"
CONTEXT_TARGET = "aws:ssm:TargetId"
CONTEXT_CHALLENGE = "aws:ssm:RandomChallenge"


class KmsError(Exception):
    """The data key could not be made or used; the message is fit to show the person."""


def encryption_context(*, session_id: str, target: str, challenge: str | None) -> dict[str, str]:
    """What the agent rebuilds for kms:Decrypt: the session id, its own instance id (and the challenge)."""
    context = {CONTEXT_SESSION: session_id, CONTEXT_TARGET: target}
    if challenge:
        # Verbatim: the agent puts its own base64 text in the context, so any re-encoding breaks Decrypt.
        context[CONTEXT_CHALLENGE] = challenge
    return context


class SessionCipher:
    """AES-256-GCM both ways with the two halves of one session's data key."""

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != DATA_KEY_BYTES:
            raise KmsError(f"KMS returned a {len(data_key)}-byte data key; Session Manager needs 64.")
        self._agent = AESGCM(data_key[:KEY_BYTES])
        self._client = AESGCM(data_key[KEY_BYTES:])

    def seal(self, plaintext: bytes) -> bytes:
        # A random nonce, as the plugin does: 2^96 values leave no practical chance of reuse in one session.
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._client.encrypt(nonce, plaintext, None)

    def open(self, blob: bytes) -> bytes:
        """The agent's plaintext; raises KmsError if the blob was not sealed with the agent's half."""
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise KmsError("a sealed payload is shorter than its nonce and tag")
        try:
            return self._agent.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None)
        except InvalidTag:
            raise KmsError("a payload did not decrypt with this session's data key") from None

    def answer_challenge(self, challenge: str) -> str:
        """The agent proves it holds the key by sealing random bytes; we open them and seal them back."""
        try:
            sealed = base64.b64decode(challenge, validate=True)
        except (binascii.Error, ValueError):
            raise KmsError("the encryption challenge is not base64") from None
        return base64.b64encode(self.seal(self.open(sealed))).decode()


@dataclass(frozen=True)
class SessionKey:
    cipher: SessionCipher
    ciphertext_b64: str  # KMSCipherTextKey of the handshake response
    seconds: float  # how long GenerateDataKey took


class DataKeys:
    """kms:GenerateDataKey for one AWS principal, off the event loop and inside the agent's patience.

    `client` makes the boto3 KMS client when a session first needs one (most sessions never do).
    """

    def __init__(self, client: Callable[[], Any], *, region: str = "", deadline: float = KMS_DEADLINE):
        self._make_client = client
        self._client: Any = None
        self.region = region
        self.deadline = deadline

    @classmethod
    def for_manager(cls, manager: SessionManager) -> DataKeys:
        """The same principal that opened the session: KMS key policies then see the same caller."""

        def make() -> Any:
            import boto3

            credentials = manager.credentials
            if credentials is None:
                # A manager built around a bare client signs with that client's credentials.
                credentials = getattr(manager.ssm, "_get_credentials", lambda: None)()
            if credentials is None:
                return boto3.client("kms", region_name=manager.region, config=_KMS_CONFIG)
            # Frozen at first use: the key is made once per session, right after StartSession.
            frozen = credentials.get_frozen_credentials()
            return boto3.client(
                "kms",
                region_name=manager.region,
                aws_access_key_id=frozen.access_key,
                aws_secret_access_key=frozen.secret_key,
                aws_session_token=frozen.token,
                config=_KMS_CONFIG,
            )

        return cls(make, region=manager.region)

    async def session_key(
        self, *, key_id: str, session_id: str, target: str, challenge: str | None
    ) -> SessionKey:
        """A fresh data key for this session, or KmsError saying which key and which permission."""
        context = encryption_context(session_id=session_id, target=target, challenge=challenge)
        started = time.monotonic()
        try:
            answer = await asyncio.wait_for(
                asyncio.to_thread(self._generate, key_id, context), timeout=self.deadline
            )
        except TimeoutError:
            raise KmsError(
                f"Session Manager requires KMS encryption with the key {key_id}, but AWS KMS did not "
                f"answer kms:GenerateDataKey within {self.deadline:g} s. Try again; if it persists, an "
                "administrator should check that the console can reach AWS KMS."
            ) from None
        except ClientError as exc:
            raise KmsError(_refusal(key_id, exc)) from exc
        except BotoCoreError as exc:
            raise KmsError(
                f"Session Manager requires KMS encryption with the key {key_id}, but the console could not "
                f"reach AWS KMS: {exc}"
            ) from exc
        except Exception as exc:
            # Renewing the credentials themselves failed (a person's role refused, say): their words.
            raise KmsError(
                f"Session Manager requires KMS encryption with the key {key_id}, but no AWS credentials "
                f"could be had for kms:GenerateDataKey: {exc}"
            ) from exc
        cipher = SessionCipher(answer["Plaintext"])
        ciphertext = base64.b64encode(answer["CiphertextBlob"]).decode()
        return SessionKey(cipher, ciphertext, time.monotonic() - started)

    def _generate(self, key_id: str, context: dict[str, str]) -> dict[str, Any]:
        if self._client is None:
            self._client = self._make_client()
        return self._client.generate_data_key(
            KeyId=key_id, NumberOfBytes=DATA_KEY_BYTES, EncryptionContext=context
        )


def _refusal(key_id: str, exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    lead = f"Session Manager requires KMS encryption with the key {key_id}, but"
    if code in ("AccessDeniedException", "AccessDenied") or status == 403 or code == "403":
        return (
            f"{lead} this terminal's AWS identity is not allowed kms:GenerateDataKey on that key. An "
            f"administrator should allow kms:GenerateDataKey on {key_id} for the role that opens terminals."
        )
    if code == "DisabledException":
        return f"{lead} that key is disabled. An administrator should enable it or change the preferences."
    if code == "KMSInvalidStateException":
        return (
            f"{lead} that key cannot be used in its current state (pending deletion or import). An "
            "administrator should restore it or change the Session Manager preferences."
        )
    if code == "NotFoundException":
        return f"{lead} AWS KMS does not know that key here. An administrator should check the preferences."
    return f"{lead} AWS KMS refused kms:GenerateDataKey ({code or 'error'}): {error.get('Message', exc)}"
