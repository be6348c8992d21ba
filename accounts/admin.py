"""Admin pages for people, groups and accounts: offboarding, IdP groups, POSIX names, provisioning, tokens."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts import api_tokens, offboarding, provisioning, scim
from accounts.models import ApiToken, ClusterAccount, IdpGroup, PosixAccount, ScimToken, User
from audit.admin import AuditedModelAdmin
from audit.log import record
from ui.templatetags.ui import when

CONFIRM_TEMPLATE = "accounts/admin/confirm_action.html"


def confirmed(request: HttpRequest) -> bool:
    """Whether an action's POST comes from its confirmation page (the list's menu only asks for it)."""
    return request.POST.get("post") == "yes"


def ask_first(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    intro: str,
    items: list[dict[str, Any]],
    confirm_label: str,
    notes: list[str] | None = None,
) -> TemplateResponse:
    """The page an action that takes something away shows first, as Django's "Delete selected" does.

    `items` are {"name", "lines"}: each selected object and what the action will do to it. Its button
    posts the same action again with post=yes, which `confirmed` recognises.
    """
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": title,
        "intro": intro,
        "items": items,
        "notes": notes or [],
        "queryset": queryset,
        "action": action,
        "confirm_label": confirm_label,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, CONFIRM_TEMPLATE, context)


@admin.register(User)
class PersonAdmin(AuditedModelAdmin, UserAdmin):
    list_display = ["username", "email", "first_name", "last_name", "is_active", "is_staff", "deactivated_at"]
    list_filter = ["is_active", "is_staff", "is_superuser", "groups"]
    readonly_fields = ["deactivated_at", "deactivated_reason", "last_login", "date_joined"]
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Offboarding", {"fields": ["deactivated_at", "deactivated_reason"]}),
    )
    actions = ["offboard_selected"]

    @admin.action(description="Deactivate (offboard)", permissions=["change"])
    def offboard_selected(self, request, queryset) -> TemplateResponse | None:
        if not confirmed(request):
            return self._ask_before_offboarding(request, queryset)
        for user in queryset:
            if user.pk == request.user.pk:
                self.message_user(request, "You cannot offboard yourself.", messages.WARNING)
                continue
            result = offboarding.offboard(
                user, by=request.user, reason=f"Deactivated in the admin by {request.user.get_username()}"
            )
            self._report(request, result)

    def _ask_before_offboarding(self, request, queryset) -> TemplateResponse:
        people = list(queryset.order_by("username"))
        others = [p for p in people if p.pk != request.user.pk]
        notes = ["You cannot offboard yourself: you are left out."] if len(others) < len(people) else []
        count = len(others)
        return ask_first(
            self,
            request,
            queryset,
            action="offboard_selected",
            title=f"Offboard {count} {'person' if count == 1 else 'people'}?",
            intro="Each person below loses every way in at once, and what they left running is ended. "
            "Their files and their history stay; reactivating them later does not bring back tokens "
            "or unlock their cluster accounts by itself.",
            items=[
                {
                    "name": f"{p.get_username()} ({p.email})" if p.email else p.get_username(),
                    "lines": offboarding.foresee(p),
                }
                for p in others
            ],
            notes=notes,
            confirm_label=f"Yes, offboard {'them' if count != 1 else 'this person'}",
        )

    def save_model(self, request, obj, form, change) -> None:
        turned_off = change and "is_active" in form.changed_data and not obj.is_active
        turned_on = change and "is_active" in form.changed_data and obj.is_active
        if turned_on:
            obj.deactivated_at, obj.deactivated_reason = None, ""
        super().save_model(request, obj, form, change)
        if turned_off:
            # Unticking "active" must not be a quieter way to half-offboard someone.
            self._report(
                request,
                offboarding.offboard(obj, by=request.user, reason="Active unticked in the admin"),
            )
        if turned_on:
            record(
                "person.reactivated",
                actor=request.user,
                target=obj.get_username(),
                message=(
                    "Reactivated in the admin; locked cluster accounts stay locked until unlocked by hand."
                ),
            )

    def _report(self, request, result: offboarding.OffboardResult) -> None:
        name = result.user.get_username()
        if result.ok:
            self.message_user(request, f"{name}: {'; '.join(result.done)}.", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"{name} is deactivated, but: {'; '.join(result.problems)}. "
                "Run manage.py reconcile_accounts once the cluster is reachable.",
                messages.WARNING,
            )


@admin.register(IdpGroup)
class IdpGroupAdmin(AuditedModelAdmin):
    list_display = ["group", "provider", "claim_value"]
    list_filter = ["provider"]
    search_fields = ["group__name", "claim_value"]


def is_idp_managed(group: Group | None) -> bool:
    return group is not None and group.pk is not None and IdpGroup.objects.filter(group=group).exists()


class ManagedByFilter(admin.SimpleListFilter):
    title = "managed by"
    parameter_name = "managed"

    def lookups(self, request, model_admin):
        return [("idp", "The IdP"), ("hand", "Hand (made in the admin)")]

    def queryset(self, request, queryset):
        if self.value() == "idp":
            return queryset.filter(idp__isnull=False)
        if self.value() == "hand":
            return queryset.filter(idp__isnull=True)
        return queryset


class MemberInline(admin.TabularInline):
    """A group's members; read-only for an IdP-managed group, whose members sign-in rewrites anyway."""

    model = User.groups.through
    fk_name = "group"
    autocomplete_fields = ["user"]
    extra = 0
    verbose_name = "member"
    verbose_name_plural = "members"

    def has_add_permission(self, request, obj=None) -> bool:
        return not is_idp_managed(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return not is_idp_managed(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not is_idp_managed(obj) and super().has_delete_permission(request, obj)


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(AuditedModelAdmin, DjangoGroupAdmin):
    list_display = ["name", "managed_by", "member_count"]
    list_filter = [ManagedByFilter]
    readonly_fields = ["managed_by"]
    fields = ["name", "managed_by", "permissions"]
    inlines = [MemberInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("idp").annotate(member_count=Count("user"))

    def construct_change_message(self, request, form, formsets, add=False):
        message = super().construct_change_message(request, form, formsets, add)
        # A membership row has no readable name ("User_groups object (7)"): name the person instead.
        through = User.groups.through
        label = str(through._meta.verbose_name)
        message = [
            m for m in message if not any(v.get("name") == label for v in m.values() if isinstance(v, dict))
        ]
        for formset in formsets or []:
            if formset.model is not through:
                continue
            message += [
                {"added": {"name": "member", "object": o.user.get_username()}} for o in formset.new_objects
            ]
            message += [
                {"changed": {"name": "member", "object": o.user.get_username(), "fields": fields}}
                for o, fields in formset.changed_objects
            ]
            message += [
                {"deleted": {"name": "member", "object": o.user.get_username()}}
                for o in formset.deleted_objects
            ]
        return message

    @admin.display(description="managed by")
    def managed_by(self, group: Group) -> str:
        idp = getattr(group, "idp", None) if group.pk else None
        if idp is None:
            return "Hand: members are kept as set here."
        return (
            f"The IdP {idp.provider} (claim value {idp.claim_value!r}): "
            "members are rewritten at each sign-in, so edit them in the IdP."
        )

    @admin.display(description="members", ordering="member_count")
    def member_count(self, group: Group) -> int:
        return group.member_count


class ClusterAccountInline(admin.TabularInline):
    model = ClusterAccount
    fields = ["cluster", "state", "user_created_at", "associated_at", "last_error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PosixAccount)
class PosixAccountAdmin(admin.ModelAdmin):
    list_display = ["username", "uid", "gid", "user", "created"]
    search_fields = ["username", "user__username", "user__email"]
    readonly_fields = ["uid", "gid", "user", "created"]
    inlines = [ClusterAccountInline]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.name_is_final:
            fields.append("username")
        return fields

    def has_add_permission(self, request) -> bool:
        # Made at first login, with a number from the counter: never by hand.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting would let a later person inherit the name, and with it someone's files.
        return False

    def save_model(self, request, obj, form, change) -> None:
        before = PosixAccount.objects.filter(pk=obj.pk).values_list("username", flat=True).first()
        super().save_model(request, obj, form, change)
        if before and before != obj.username:
            record(
                "posix.renamed",
                actor=request.user,
                target=obj.username,
                message=f"POSIX name changed from {before} to {obj.username} before any cluster had it.",
                details={"from": before, "to": obj.username},
            )


@admin.register(ClusterAccount)
class ClusterAccountAdmin(AuditedModelAdmin):
    list_display = ["account", "cluster", "state", "attempts", "updated", "short_error"]
    list_filter = ["state", "cluster"]
    search_fields = ["account__username", "account__user__email"]
    actions = ["retry_provisioning"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ClusterAccount._meta.fields if f.name != "id"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="last error")
    def short_error(self, row: ClusterAccount) -> str:
        return row.last_error[:80] + ("…" if len(row.last_error) > 80 else "")

    @admin.action(description="Retry provisioning", permissions=["change"])
    def retry_provisioning(self, request, queryset) -> None:
        for row in queryset.select_related("account__user", "cluster"):
            if row.state in (ClusterAccount.State.READY, ClusterAccount.State.LOCKED):
                self.message_user(request, f"{row}: nothing to do.", messages.INFO)
                continue
            try:
                provisioning.resume(row, actor=request.user, wait=0)
            except provisioning.ProvisioningError as e:
                self.message_user(request, e.message, messages.ERROR)
            else:
                self.message_user(
                    request, f"{row.account.username} is ready on {row.cluster.slug}.", messages.SUCCESS
                )


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedModelAdmin):
    list_display = ["name", "user", "prefix", "created", "expires", "revoked", "last_used"]
    list_filter = ["revoked"]
    search_fields = ["name", "prefix", "user__username", "user__email"]
    # The digest is not a secret by itself, but nobody needs to see it.
    exclude = ["digest"]
    readonly_fields = ["user", "name", "prefix", "created", "expires", "revoked", "last_used"]
    actions = ["revoke_selected"]

    def has_add_permission(self, request) -> bool:
        # A token is shown once to whoever asked for it; see manage.py issue_api_token.
        return False

    @admin.action(description="Revoke", permissions=["change"])
    def revoke_selected(self, request, queryset) -> TemplateResponse | None:
        if not confirmed(request):
            live = queryset.filter(revoked__isnull=True).select_related("user")
            return ask_first(
                self,
                request,
                queryset,
                action="revoke_selected",
                title=f"Revoke {live.count()} API token(s)?",
                intro="A revoked token stops working at once: the CLI or script using it is refused (401) "
                "until its owner makes a new one. This cannot be undone.",
                items=[
                    {
                        "name": f"{t.name} ({t.prefix}…) of {t.user.get_username()}",
                        "lines": [f"Last used {when(t.last_used)}." if t.last_used else "Never used."],
                    }
                    for t in live
                ],
                notes=["Tokens already revoked are left as they are."]
                if live.count() < queryset.count()
                else [],
                confirm_label="Yes, revoke",
            )
        count = sum(api_tokens.revoke(t, by=request.user, reason="admin") for t in queryset)
        self.message_user(request, f"{count} token(s) revoked.")


@admin.register(ScimToken)
class ScimTokenAdmin(AuditedModelAdmin):
    """Tokens IdPs use to provision people over SCIM. A new one is shown once, when it is made."""

    list_display = ["name", "prefix", "created", "last_used", "revoked"]
    fields = ["name"]
    actions = ["revoke"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        raw = scim.issue_token(obj.name)
        made = ScimToken.objects.get(prefix=raw[:12], name=obj.name)
        obj.pk, obj.prefix, obj.digest = made.pk, made.prefix, made.digest
        self.message_user(
            request,
            f"SCIM token for {obj.name}: {raw} — copy it now into the IdP's provisioning setup "
            "(base URL https://<console>/scim/v2/); the console keeps only its hash.",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected SCIM tokens")
    def revoke(self, request, queryset) -> TemplateResponse | None:
        if not confirmed(request):
            live = queryset.filter(revoked__isnull=True)
            return ask_first(
                self,
                request,
                queryset,
                action="revoke",
                title=f"Revoke {live.count()} SCIM token(s)?",
                intro="The identity provider using a revoked token can no longer create, change or "
                "deactivate people here until it is given a new one. This cannot be undone.",
                items=[{"name": f"{t.name} ({t.prefix}…)", "lines": []} for t in live],
                confirm_label="Yes, revoke",
            )
        count = queryset.filter(revoked__isnull=True).update(revoked=timezone.now())
        record(
            "scim.token_revoked",
            actor=request.user,
            message=f"{count} SCIM token(s) revoked.",
            request=request,
        )
        self.message_user(request, f"{count} SCIM token(s) revoked.", messages.SUCCESS)
