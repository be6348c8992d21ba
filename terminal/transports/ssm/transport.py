"""The terminal transport that reaches a head node through an AWS SSM Session Manager session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from botocore.exceptions import BotoCoreError
from websockets.exceptions import WebSocketException

from ..base import Transport, TransportError
from .channel import READY_FALLBACK, DataChannel, Endpoint
from .kms import DataKeys
from .session import SessionError, SessionGrant, SessionManager

# The agent gates behaviour on the client's version by numeric comparison (separate stderr from 1.2.312,
# an "update your plugin" notice at or below 1.2.295), so declare the plugin release whose behaviour
# this client implements rather than the product's own version.
CLIENT_VERSION = "1.2.694.0"

log = logging.getLogger(__name__)


class SsmTransport(Transport):
    """A shell on `target` running `command` (see login_command) over the Session Manager data channel."""

    def __init__(
        self,
        manager: SessionManager,
        *,
        target: str,
        command: str,
        reason: str | None = None,
        client_version: str = CLIENT_VERSION,
        ready_fallback: float = READY_FALLBACK,
        proxy: str | bool | None = True,
    ) -> None:
        self.manager = manager
        self.target = target
        self.command = command
        self.reason = reason
        self.session_id = ""
        self.channel: DataChannel | None = None
        self._client_version = client_version
        self._ready_fallback = ready_fallback
        self._proxy = proxy
        self._stream_url = ""
        self._ended_reason: str | None = None
        self._closed = False

    @property
    def ended_reason(self) -> str | None:
        if self.channel is not None and self.channel.ended_reason is not None:
            return self.channel.ended_reason
        return self._ended_reason

    async def start(self, cols: int, rows: int) -> None:
        try:
            grant = await self.manager.start(target=self.target, command=self.command, reason=self.reason)
        except SessionError as exc:
            self._ended_reason = str(exc)
            raise TransportError(str(exc)) from exc
        self.session_id = grant.session_id
        self.channel = DataChannel(
            session_id=grant.session_id,
            resume=self._resume,
            client_version=self._client_version,
            ready_fallback=self._ready_fallback,
            proxy=self._proxy,
            # KMS-encrypted sessions: the data key is made by the principal that opened the session.
            target=self.target,
            data_keys=DataKeys.for_manager(self.manager),
        )
        # The size is queued before the socket opens so it is the first thing sent once the shell is ready.
        await self.channel.set_size(cols, rows)
        try:
            await self.channel.open(await self._endpoint(grant))
        except (OSError, TimeoutError, WebSocketException) as exc:
            message = f"Could not open the terminal connection to {self.target}: {exc}"
            await self.close(message)
            raise TransportError(message) from exc

    async def send(self, data: bytes) -> None:
        if self.channel is not None:
            await self.channel.send_input(data)

    async def resize(self, cols: int, rows: int) -> None:
        if self.channel is not None:
            await self.channel.set_size(cols, rows)

    def output(self) -> AsyncIterator[bytes]:
        # The channel's own iterator, not one wrapped around it: every chunk of output passes here.
        if self.channel is None:
            return _nothing()
        return self.channel.output()

    async def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ended_reason is None:
            self._ended_reason = reason
        if self.channel is not None:
            await self.channel.close(reason)
        if self.session_id:
            # Without this the session lingers on the node until Session Manager's idle timeout.
            await self.manager.terminate(self.session_id)

    async def _endpoint(self, grant: SessionGrant) -> Endpoint:
        # The service may move the session to another cell on resume; otherwise the old URL still holds.
        self._stream_url = grant.stream_url or self._stream_url
        try:
            headers = await asyncio.to_thread(self.manager.upgrade_headers, self._stream_url)
        except BotoCoreError as exc:
            # Like the plugin: an unsigned upgrade is still accepted today, a refused terminal helps nobody.
            log.warning(
                "ssm session %s: could not sign the upgrade, connecting unsigned: %s", self.session_id, exc
            )
            headers = {}
        return Endpoint(self._stream_url, grant.token_value, headers)

    async def _resume(self) -> Endpoint | None:
        grant = await self.manager.resume(self.session_id)
        if grant is None:
            return None
        return await self._endpoint(grant)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that ends at once
