"""A stand-in SSM-managed head node in its own process: the repo's agent emulator and an SSM control plane.

The console reaches it exactly as it reaches AWS: boto3 (pointed here by AWS_ENDPOINT_URL_SSM)
calls StartSession / TerminateSession, then the data channel opens a SigV4-signed WebSocket to
the emulator, which runs a real shell on a real PTY. Its own process, so the agent's work is
not counted against the console's CPU (on AWS it runs on another machine).

Run as `python -m bench.ssm_host`; it prints one JSON line with its ports, then serves until
stdin closes or it gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.support.ssm_agent import REGION, TARGET, TEST_CREDENTIALS, AgentBehaviour, AgentEmulator

REPO = Path(__file__).resolve().parent.parent
# Enough for a SigV4-signed JSON call; anything bigger is not a control-plane request.
MAX_BODY = 1 << 20


class ControlPlane:
    """StartSession, ResumeSession and TerminateSession (AWS JSON 1.1 protocol), answered by the emulator."""

    def __init__(self, agent: AgentEmulator) -> None:
        self.agent = agent
        self.started = 0
        self.terminated = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # boto3 keeps the connection alive between calls.
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    return
                body = await reader.readexactly(length) if length else b"{}"
                status, answer = await self.answer(headers.get("x-amz-target", ""), json.loads(body or b"{}"))
                payload = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Bad Request'}\r\n"
                    "Content-Type: application/x-amz-json-1.1\r\n"
                    f"x-amzn-RequestId: {uuid.uuid4()}\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, target: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        action = target.rpartition(".")[2]
        if action == "StartSession":
            if request.get("Target") != TARGET:
                return 400, {
                    "__type": "TargetNotConnected",
                    "message": f"{request.get('Target')} is not connected",
                }
            session = self.agent.new_session(AgentBehaviour(require_sigv4=TEST_CREDENTIALS))
            self.started += 1
            return 200, {
                "SessionId": session.session_id,
                "TokenValue": session.new_token(),
                "StreamUrl": self.agent.stream_url(session),
            }
        session = self.agent.sessions.get(request.get("SessionId", ""))
        if action == "ResumeSession":
            if session is None or session.ended:
                return 400, {"__type": "DoesNotExistException", "message": "session is over"}
            return 200, {
                "SessionId": session.session_id,
                "TokenValue": session.new_token(),
                "StreamUrl": self.agent.stream_url(session),
            }
        if action == "TerminateSession":
            if session is not None:
                self.terminated += 1
                session.terminate()
                # The shell and its PTY go now; a session that ended stays ended on AWS too.
                asyncio.get_running_loop().create_task(self._forget(session.session_id))
            return 200, {"SessionId": request.get("SessionId", "")}
        return 400, {"__type": "InvalidAction", "message": f"{action or 'no action'} is not emulated"}

    async def _forget(self, session_id: str) -> None:
        session = self.agent.sessions.pop(session_id, None)
        if session is not None:
            await session.shutdown()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    # The parent holds our stdin: when it goes away, so do we, even if it never sent a signal.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
    async with AgentEmulator() as agent:
        plane = ControlPlane(agent)
        server = await asyncio.start_server(plane.handle, "127.0.0.1", 0)
        control_port = server.sockets[0].getsockname()[1]
        print(json.dumps({"data_port": agent.port, "control_port": control_port}), flush=True)
        await stop
        server.close()


class SsmHost:
    """Starts and stops the stand-in head node; `console_env` is what the console needs to reach it."""

    def __init__(self, python: str, log_path: Path) -> None:
        self.python = python
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None
        self.control_port = 0

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [self.python, "-m", "bench.ssm_host"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the SSM stand-in did not start; see {self.log_path}")
        self.control_port = json.loads(line)["control_port"]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def console_env(self) -> dict[str, str]:
        """For boto3: the endpoint, a region, and the credentials the emulator checks signatures against."""
        return {
            "AWS_ENDPOINT_URL_SSM": f"http://127.0.0.1:{self.control_port}",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS.access_key,
            "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS.secret_key,
            "AWS_SESSION_TOKEN": TEST_CREDENTIALS.token or "",
            # Nothing from the machine's own AWS setup may leak in.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    asyncio.run(serve())
