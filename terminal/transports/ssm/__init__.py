"""Terminal transport over the AWS SSM Session Manager data channel (see docs/ssm-data-channel.md)."""

from __future__ import annotations

from .session import SessionError, SessionManager, login_command
from .transport import SsmTransport

__all__ = ["SessionError", "SessionManager", "SsmTransport", "login_command"]
