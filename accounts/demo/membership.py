"""Who is in the demo: its settings, whether it takes new people, joining, and expiry."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from accounts import offboarding, posix
from accounts.models import DemoMember, DemoSignup, User
from audit.log import record
from clusters.models import Cluster
from clusters.refusal import Refusal
from prepared import Prepared, fields_of, instance

# A plain console group (not IdP-managed): access.demo's seed gives it the demo's grant.
DEMO_GROUP = "demo"

# Sent inside the joining transaction with `member` (a DemoMember whose `cluster` is set):
# receivers (access.demo) add what the person needs there, or undo it on `left`.
joined = Signal()
left = Signal()


class DemoRefused(Refusal):
    """A join or a link that cannot go ahead; `code` picks the page (accounts.demo.views.PAGES) that
    says why, with its status; `detail` fills it in (the day a demo ended)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(detail or code, code=code)
        self.detail = detail


@dataclass(frozen=True)
class Config:
    cluster: str
    open: bool
    days: int
    max_people: int
    per_hour: int
    link_minutes: int


def config() -> Config:
    """The CLUSTERRA_DEMO_* settings, checked: a nonsensical value fails loudly rather than opening wide."""
    cfg = Config(
        cluster=str(settings.CLUSTERRA_DEMO_CLUSTER or "").strip(),
        open=bool(settings.CLUSTERRA_DEMO_OPEN),
        days=int(settings.CLUSTERRA_DEMO_DAYS),
        max_people=int(settings.CLUSTERRA_DEMO_MAX_PEOPLE),
        per_hour=int(settings.CLUSTERRA_DEMO_SIGNUPS_PER_HOUR),
        link_minutes=int(settings.CLUSTERRA_DEMO_LINK_MINUTES),
    )
    for name, value, least in (
        ("CLUSTERRA_DEMO_DAYS", cfg.days, 1),
        ("CLUSTERRA_DEMO_MAX_PEOPLE", cfg.max_people, 0),
        ("CLUSTERRA_DEMO_SIGNUPS_PER_HOUR", cfg.per_hour, 1),
        ("CLUSTERRA_DEMO_LINK_MINUTES", cfg.link_minutes, 1),
    ):
        if value < least:
            raise ImproperlyConfigured(f"{name}={value} must be at least {least}.")
    return cfg


@dataclass(frozen=True)
class Status:
    """Whether the demo takes new people, and if not, why (`reason` is a page code)."""

    state: str  # "open", "full", "closed", or "absent" (this console has no demo)
    reason: str
    config: Config
    cluster: Cluster | None = None
    group: Group | None = None
    people: int = 0

    @property
    def accepting(self) -> bool:
        return self.state == "open"

    @property
    def offered(self) -> bool:
        """Links are mailed and existing demo people sign in, even while full or closed to newcomers."""
        return self.state != "absent"


def status() -> Status:
    cfg = config()
    if not cfg.cluster:
        return Status("absent", "not_configured", cfg)
    cluster = Cluster.objects.filter(slug=cfg.cluster).first()
    group = Group.objects.filter(name=DEMO_GROUP).first()
    if cluster is None or not cluster.enabled or group is None:
        return Status("closed", "not_ready", cfg, cluster, group)
    people = current_members().count()
    if not cfg.open:
        return Status("closed", "turned_off", cfg, cluster, group, people)
    if people >= cfg.max_people:
        return Status("full", "full", cfg, cluster, group, people)
    return Status("open", "open", cfg, cluster, group, people)


def current_members() -> Any:
    """Demo people who hold a place: not ended, not deactivated."""
    return DemoMember.objects.filter(ended__isnull=True, user__is_active=True)


def locked_status() -> Status:
    """status(), with the demo group's row locked until the transaction ends.

    Every join and every mailed link takes this lock first, so two requests cannot
    both take the last place or both slip under the throttle. (SQLite ignores row
    locks, but there the console's IMMEDIATE transactions already serialise writers.)
    """
    Group.objects.select_for_update().filter(name=DEMO_GROUP).first()
    return status()


def membership(user: Any) -> DemoMember | None:
    if not getattr(user, "pk", None):
        return None
    return DemoMember.objects.filter(user_id=user.pk).select_related("cluster").first()


# Asked by the dashboard on every visit (a person has one membership at most).
_CURRENT = Prepared(
    lambda user_id: DemoMember.objects.filter(user_id=user_id, ended__isnull=True).values(
        *fields_of(DemoMember)
    ),
    int,
)


def current(user: Any) -> DemoMember | None:
    """The person's demo membership while it lasts (not ended), else None."""
    rows = _CURRENT.rows(user.pk) if getattr(user, "pk", None) else []
    return instance(DemoMember, rows[0]) if rows else None


def join_existing(user: User, *, request: Any = None) -> DemoMember:
    """A signed-in person presses "Join the demo". Raises DemoRefused with a page code."""
    with transaction.atomic():
        st = locked_status()
        current = membership(user)
        if current is not None:
            if current.ended is None:
                return current
            raise DemoRefused("demo_ended", f"demo ended on {current.ended:%Y-%m-%d}")
        if not user.is_active:
            raise DemoRefused("deactivated")
        _require_accepting(st)
        return _join(user, DemoMember.Via.ACCOUNT, st, request=request)


def create_email_person(email: str, st: Status, *, request: Any = None) -> DemoMember:
    """A new console account for a verified address, in the demo. Call with locked_status() held."""
    _require_accepting(st)
    user = User(username=free_username(email), email=email)
    # No password: the mailed link is how this person signs in (see accounts.demo).
    user.set_unusable_password()
    user.save()
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    member = _join(user, DemoMember.Via.EMAIL, st, request=request)
    # The POSIX name is fixed now, from the address, as an IdP sign-in would fix it.
    posix.on_login(user, {"email": email})
    return member


def _require_accepting(st: Status) -> None:
    if not st.accepting:
        raise DemoRefused(st.reason)


def _join(user: User, via: str, st: Status, *, request: Any) -> DemoMember:
    # Both are set whenever the demo is accepting, which the callers checked.
    assert st.group is not None
    assert st.cluster is not None
    member = DemoMember.objects.create(
        user=user,
        via=via,
        cluster=st.cluster,
        expires=timezone.now() + timedelta(days=st.config.days),
    )
    user.groups.add(st.group)
    record(
        "demo.joined",
        actor=user,
        cluster=st.cluster,
        target=user.get_username(),
        reason=via,
        message=f"{user.get_username()} joined the demo until {member.expires:%Y-%m-%d %H:%M %Z}.",
        request=request,
        details={"via": via, "expires": member.expires.isoformat(), "people": st.people + 1},
    )
    joined.send(sender=DemoMember, member=member)
    return member


def free_username(email: str) -> str:
    """The address as the console user name, made unique; Django's name rules allow most addresses."""
    max_length = User._meta.get_field("username").max_length
    base = "".join(c if c.isalnum() or c in "@.+-_" else "_" for c in email)[:max_length]
    name, n = base, 1
    while User.objects.filter(username__iexact=name).exists():
        n += 1
        suffix = f"-{n}"
        name = base[: max_length - len(suffix)] + suffix
    return name


@dataclass
class Expiry:
    member: DemoMember
    how: str
    problems: list[str] = field(default_factory=list)


def expire_due(*, now: datetime | None = None, by: str = "demo expiry") -> list[Expiry]:
    """End every demo membership past its date: offboard e-mail accounts, others only leave the demo."""
    now = now or timezone.now()
    due = (
        DemoMember.objects.filter(ended__isnull=True, expires__lte=now)
        .select_related("user", "cluster")
        .order_by("expires", "pk")
    )
    return [_expire(member, now, by) for member in due]


def _expire(member: DemoMember, now: datetime, by: str) -> Expiry:
    user = member.user
    days = max(1, round((member.expires - member.joined).total_seconds() / 86400))
    problems: list[str] = []
    if member.via == DemoMember.Via.EMAIL:
        # Like anyone's offboarding: the database change first, then tokens, terminals, Linux users.
        result = offboarding.offboard(user, by=by, reason=f"Demo account ended after {days} days")
        problems = result.problems
        how = DemoMember.Ending.OFFBOARDED
    else:
        how = DemoMember.Ending.LEFT
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name=DEMO_GROUP))
        member.ended, member.ended_how = now, how
        member.save(update_fields=["ended", "ended_how"])
        left.send(sender=DemoMember, member=member)
        record(
            "demo.expired",
            actor=by,
            cluster=member.cluster,
            target=user.get_username(),
            outcome="error" if problems else "allowed",
            reason=how,
            message=f"Demo of {user.get_username()} ended ({member.get_ended_how_display().lower()})"
            + (f"; not done: {'; '.join(problems)}" if problems else "."),
            details={"via": member.via, "joined": member.joined.isoformat(), "days": days},
        )
    return Expiry(member, how, problems)


def prune_links(*, now: datetime | None = None) -> int:
    """Forget mailed links once neither the throttle nor the link itself can need them."""
    cfg = config()
    keep = max(timedelta(days=1), timedelta(minutes=cfg.link_minutes) + timedelta(hours=1))
    deleted, _ = DemoSignup.objects.filter(created__lt=(now or timezone.now()) - keep).delete()
    return deleted
