"""The demo's mailed links: asking for one (throttled), and what opening one does (once)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.demo import membership
from accounts.demo.membership import DemoRefused
from accounts.models import DemoMember, DemoSignup, User

SALT = "clusterra.accounts.demo.link"
WINDOW = timedelta(hours=1)


class Throttled(Exception):
    """Too many links for this client or this address within the hour; one more in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


def client_key(request: Any) -> str:
    """Who is asking, for the throttle: the IPv4 address, or the /64 an IPv6 address is in."""
    raw = (getattr(request, "META", {}) or {}).get("REMOTE_ADDR") or ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def request_link(email: str, request: Any) -> tuple[DemoSignup, str]:
    """A new link for `email`: the row and the token. Raises DemoRefused or Throttled.

    Only an absent demo refuses here; whether the link may make an account is decided
    when it is opened (see accounts.demo), so this answer is the same for every address.
    """
    client = client_key(request)
    with transaction.atomic():
        st = membership.locked_status()
        if not st.offered:
            raise DemoRefused(st.reason)
        since = timezone.now() - WINDOW
        recent = DemoSignup.objects.filter(created__gte=since)
        for rows in (recent.filter(client=client), recent.filter(email=email)):
            times = list(rows.order_by("created").values_list("created", flat=True))
            if len(times) >= st.config.per_hour:
                # The oldest link in the window ages out first; then one more may be sent.
                wait = (times[len(times) - st.config.per_hour] + WINDOW - timezone.now()).total_seconds()
                raise Throttled(max(1, math.ceil(wait)))
        signup = DemoSignup.objects.create(email=email, client=client)
    # Only the row's id: the address stays out of URLs and the web server's access log.
    token = signing.dumps(signup.pk, salt=SALT)
    return signup, token


@dataclass(frozen=True)
class Opened:
    """What a link does: "join" (a new account), "sign_in" (an e-mail demo account); `user` once done."""

    action: str
    email: str
    signup: DemoSignup
    user: User | None = None
    member: DemoMember | None = None


def check(token: str) -> Opened:
    """What opening the link would do, changing nothing. Raises DemoRefused with the page code."""
    signup, email = _read(token)
    return _decide(signup, email, membership.status())


def use(token: str, *, request: Any = None) -> Opened:
    """Spend the link and do what it is for. Raises DemoRefused (then nothing has changed)."""
    signup, email = _read(token)
    with transaction.atomic():
        st = membership.locked_status()
        opened = _decide(signup, email, st)
        now = timezone.now()
        # Conditional, so of two clicks racing on one link exactly one gets the row.
        if not DemoSignup.objects.filter(pk=signup.pk, used_at__isnull=True).update(used_at=now):
            raise DemoRefused("used")
        # Older links to the same mailbox are spent too: the newest one opened is the only one that counted.
        DemoSignup.objects.filter(email=email, used_at__isnull=True).update(used_at=now)
        if opened.action == "join":
            member = membership.create_email_person(email, st, request=request)
            return Opened("join", email, signup, member.user, member)
        return opened


def _read(token: str) -> tuple[DemoSignup, str]:
    minutes = membership.config().link_minutes
    try:
        data = signing.loads(token, salt=SALT, max_age=timedelta(minutes=minutes))
    except signing.SignatureExpired:
        raise DemoRefused("expired") from None
    except signing.BadSignature:
        raise DemoRefused("bad_link") from None
    if not isinstance(data, int) or isinstance(data, bool):
        raise DemoRefused("bad_link")
    signup = DemoSignup.objects.filter(pk=data).first()
    if signup is None:
        # Signed by us, but its row is gone: pruned, so long past its lifetime.
        raise DemoRefused("expired")
    return signup, signup.email


def _decide(signup: DemoSignup, email: str, st: membership.Status) -> Opened:
    if signup.used_at is not None:
        raise DemoRefused("used")
    if not st.offered:
        raise DemoRefused(st.reason)
    # An address allauth holds for someone counts as theirs too (as accounts.adapter treats it).
    owns = Q(email__iexact=email) | Q(emailaddress__email__iexact=email)
    people = list(User.objects.filter(owns).distinct().select_related("demo"))
    active = [p for p in people if p.is_active]
    if not people:
        if not st.accepting:
            raise DemoRefused(st.reason)
        return Opened("join", email, signup)
    if not active:
        raise DemoRefused("deactivated")
    person = active[0]
    member = getattr(person, "demo", None) if len(active) == 1 else None
    if member is None or member.via != DemoMember.Via.EMAIL:
        # An account with its own sign-in (IdP, password): a mailbox must not be a way around it.
        raise DemoRefused("use_your_sign_in")
    return Opened("sign_in", email, signup, person, member)
