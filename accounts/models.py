"""Who people are: the console's user, IdP-managed groups, POSIX accounts and their state per cluster."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, Group
from django.core.exceptions import ValidationError
from django.db import models

from accounts.posix_names import name_problem
from clusters.models import Cluster
from prepared import Prepared, fields_of, instance


class User(AbstractUser):
    """A person. Deactivation (is_active=False) is offboarding: see accounts.offboarding."""

    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_reason = models.CharField(max_length=200, blank=True)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"


class IdpGroup(models.Model):
    """Marks a console group as owned by an IdP: its members are rewritten at each login.

    Groups without this mark were made by hand in the admin and are never touched by sync.
    """

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="idp")
    provider = models.CharField(max_length=64, help_text="The allauth provider id the group came from.")
    claim_value = models.CharField(max_length=255, help_text="The group's name or id as the IdP sends it.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "claim_value"], name="one_group_per_idp_value"),
        ]

    def __str__(self) -> str:
        return f"{self.group.name} (from {self.provider})"


class PosixAccount(models.Model):
    """One person's Linux identity, the same on every cluster.

    The name and UID are allocated once and never reused: the row outlives the
    person (user becomes NULL), so no later person can inherit their files.
    """

    user = models.OneToOneField(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="posix_account"
    )
    username = models.CharField(max_length=32, unique=True)
    uid = models.PositiveIntegerField(unique=True)
    gid = models.PositiveIntegerField(unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "POSIX account"

    def __str__(self) -> str:
        return f"{self.username} ({self.uid})"

    @property
    def name_is_final(self) -> bool:
        """True once a Linux user of this name exists (or may exist) on some cluster."""
        return self.pk is not None and self.clusters.filter(user_created_at__isnull=False).exists()

    def clean(self) -> None:
        problem = name_problem(self.username)
        if problem:
            raise ValidationError({"username": problem})
        if self.pk is None:
            return
        before = PosixAccount.objects.filter(pk=self.pk).values_list("username", flat=True).first()
        if before is not None and before != self.username and self.name_is_final:
            # Renaming here would not rename the Linux user, files or Slurm association on the cluster.
            raise ValidationError(
                {
                    "username": f"{before!r} can no longer be renamed: its Linux user already exists on a "
                    "cluster. Rename it there by hand first, or keep this name."
                }
            )


# /v1/me shows it on every call: compiled once.
_ACCOUNT_OF = Prepared(
    lambda person: PosixAccount.objects.filter(user_id=person).values(*fields_of(PosixAccount)), int
)


def posix_account_of(person: Any) -> PosixAccount | None:
    """The person's POSIX account, once one was made for them."""
    rows = _ACCOUNT_OF.rows(person.pk)
    return instance(PosixAccount, rows[0]) if rows else None


class IdCounter(models.Model):
    """The next free UID/GID. A counter, not max()+1, so a deleted row's number is never handed out again."""

    name = models.CharField(max_length=16, primary_key=True)
    next_value = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.name}: next {self.next_value}"


class ClusterAccount(models.Model):
    """A POSIX account's state on one cluster: how far just-in-time provisioning got."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        USER_CREATED = "user_created", "Linux user created"
        ASSOCIATED = "associated", "Slurm association created"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        LOCKED = "locked", "Locked (offboarded)"
        # No grant on that cluster any more: locked until one comes back (then unlocked on first use).
        SUSPENDED = "suspended", "Locked (no grant)"

    account = models.ForeignKey(PosixAccount, on_delete=models.PROTECT, related_name="clusters")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="accounts")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # When each step was first found done: a failed row still says where to resume, and
    # once the Linux user exists the POSIX name is fixed (see PosixAccount.clean).
    user_created_at = models.DateTimeField("Linux user created", null=True, blank=True)
    associated_at = models.DateTimeField("Slurm association created", null=True, blank=True)
    # Set while one worker runs the steps, so a concurrent call waits instead of running them too.
    busy_until = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "cluster"], name="one_state_per_account_and_cluster"),
        ]

    def __str__(self) -> str:
        return f"{self.account.username} on {self.cluster.slug}: {self.state}"


class ApiToken(models.Model):
    """A person's token for /v1 and the CLI. Only a hash is stored; the token is shown once."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True, help_text="The visible start of the token.")
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    revoked = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"


class DemoMember(models.Model):
    """A person in the self-service demo: how they came in and when their demo access ends.

    `via` decides what expiry does (see accounts.demo.membership): an account the
    e-mail signup made exists only for the demo and is offboarded; an account that
    existed before (an IdP person who pressed "Join the demo") only leaves the demo.
    """

    class Via(models.TextChoices):
        EMAIL = "email", "E-mail signup (the account exists for the demo)"
        ACCOUNT = "account", "An existing console account joined"

    class Ending(models.TextChoices):
        OFFBOARDED = "offboarded", "Offboarded"
        LEFT = "left", "Left the demo (the account stays)"

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="demo")
    via = models.CharField(max_length=8, choices=Via.choices)
    # The cluster the person's demo quota was made on; the signup's cluster can change later.
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    joined = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(db_index=True)
    ended = models.DateTimeField(null=True, blank=True)
    ended_how = models.CharField(max_length=10, choices=Ending.choices, blank=True)

    class Meta:
        verbose_name = "demo member"

    def __str__(self) -> str:
        return f"{self.user.get_username()} (demo until {self.expires:%Y-%m-%d})"


class DemoSignup(models.Model):
    """One sign-in link mailed from the demo page: counted for throttling, spent when used."""

    email = models.EmailField()
    # The throttle key: the client's IPv4 address, or its IPv6 /64 (one household or host holds a whole /64).
    client = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "demo sign-in link"
        indexes = [
            models.Index(fields=["client", "created"], name="demo_signup_client_created"),
            models.Index(fields=["email", "created"], name="demo_signup_email_created"),
        ]

    def __str__(self) -> str:
        return f"link for {self.email} ({self.created:%Y-%m-%d %H:%M})"


class OidcSession(models.Model):
    """One console session opened through an IdP, as that IdP names it: for its back-channel logout.

    The IdP's logout token names the session by `sid` (per client) or the person by `sub`; the
    console finds the Django session it opened from that, since the IdP's request carries no cookie.
    """

    provider_id = models.CharField(max_length=64)
    issuer = models.CharField(max_length=255)
    sid = models.CharField(max_length=255, blank=True)
    sub = models.CharField(max_length=255)
    session_key = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="oidc_sessions")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["issuer", "sid"], name="oidc_session_by_sid"),
            models.Index(fields=["issuer", "sub"], name="oidc_session_by_sub"),
        ]

    def __str__(self) -> str:
        return f"{self.user} via {self.provider_id}"


class ScimToken(models.Model):
    """A bearer token an IdP's SCIM client (Okta, Entra ID) uses on /scim/v2/; only its hash is kept."""

    name = models.CharField(max_length=100, help_text="Which IdP connection uses it, e.g. 'Okta production'.")
    prefix = models.CharField(max_length=12, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "SCIM token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ScimResource(models.Model):
    """A User or Group as the IdP pushed it over SCIM: its id, its externalId, and the attributes it sent."""

    class Kind(models.TextChoices):
        USER = "User", "User"
        GROUP = "Group", "Group"

    id = models.UUIDField(primary_key=True, editable=False)
    kind = models.CharField(max_length=5, choices=Kind.choices)
    user = models.OneToOneField(User, null=True, blank=True, on_delete=models.CASCADE, related_name="scim")
    group = models.OneToOneField(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="scim")
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    attributes = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SCIM resource"

    def __str__(self) -> str:
        return f"SCIM {self.kind} {self.id}"


class IdpRefresh(models.Model):
    """The refresh token an IdP gave at a person's last sign-in, encrypted: to ask it later whether it
    still accepts them (accounts.idp_check), for IdPs that push nothing (Google, or no SCIM set up)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="idp_refresh")
    provider_id = models.CharField(max_length=64)
    sealed = models.TextField(
        help_text="The refresh token, encrypted with a key derived from the secret key."
    )
    checked = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "provider_id"], name="one_refresh_per_idp")]

    def __str__(self) -> str:
        return f"{self.user} at {self.provider_id}"
