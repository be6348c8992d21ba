"""A redis-server of a test's own on a free loopback port (the shared Redis on :6379 is never touched)."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:`port`, with nothing kept on disk."""

    def __init__(self, port: int, *, password: str = "", tls_dir: Path | None = None) -> None:
        """With `tls_dir`, TLS only: a self-signed certificate for 127.0.0.1 is made there (openssl)."""
        self.port = port
        self.password = password
        self.tls_dir = tls_dir
        auth = f":{password}@" if password else ""
        if tls_dir is None:
            self.url = f"redis://{auth}127.0.0.1:{port}/0"
        else:
            self.url = f"rediss://{auth}127.0.0.1:{port}/0?ssl_ca_certs={tls_dir / 'cert.pem'}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls_dir is not None:
            cert, key = self.tls_dir / "cert.pem", self.tls_dir / "key.pem"
            request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            request += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
            subprocess.run(
                [*request, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
            )
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert)]
            listen += [
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(cert),
                "--tls-auth-clients",
                "no",
            ]
        self.process = subprocess.Popen(
            [
                "redis-server",
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def crash(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def answers(self) -> bool:
        try:
            with self.connect(timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                # Without the password a live server answers "-NOAUTH …": it is up all the same.
                return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def connect(self, timeout: float = 2) -> socket.socket:
        """A raw connection, over TLS when the server speaks only that."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.tls_dir is None:
            return raw
        context = ssl.create_default_context(cafile=str(self.tls_dir / "cert.pem"))
        return context.wrap_socket(raw, server_hostname="127.0.0.1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
