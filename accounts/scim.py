"""SCIM 2.0 provisioning (RFC 7643/7644): the IdP pushes people and groups in; `active: false` offboards.

Okta and Entra ID push here (`/scim/v2/`) with a bearer token made in the admin (ScimToken, kept as
a hash). What they send is kept as they sent it (ScimResource.attributes) and mapped onto the
console: a User is a person (userName, e-mail, names, active), a Group a console group (name,
members). The effects that matter happen at once:

- `active: false` (PATCH, PUT) or DELETE offboards the person (accounts.offboarding: sessions, API
  tokens, terminals, Slurm, processes, the Linux account), once; `active: true` lets them sign in again.
- a membership change moves the person in or out of the console group, which republishes the policy
  and closes terminals whose grant went with it (access.receivers).

Both vendors' dialects are accepted: Entra's capitalised ops and "True"/"False" strings, its
path-less replace whose keys are paths, member removal by value list or by filter; Okta's full PUT.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts import offboarding
from accounts.models import ScimResource, ScimToken, User
from accounts.scim_schema import (
    ERROR,
    GROUP_SCHEMA,
    LIST,
    MAX_RESULTS,
    PATCH,
    RESOURCE_TYPE_SCHEMA,
    RESOURCE_TYPES,
    SCHEMA_SCHEMA,
    SCHEMAS,
    SERVICE_PROVIDER_CONFIG,
    USER_SCHEMA,
)
from audit.log import record

log = logging.getLogger("clusterra.accounts.scim")

CONTENT_TYPE = "application/scim+json"
BOOLEANS = {"active", "primary"}
DEACTIVATED = "Deactivated at the identity provider"
DELETED = "Deleted at the identity provider"
SCIM_REASONS = (DEACTIVATED,)
_FILTER = re.compile(
    r'^\s*([A-Za-z][\w.$]*(?:\[[^\]]*\])?(?:\.[\w$]+)?)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I
)
_VALUE_PATH = re.compile(r'^([\w$]+)\[\s*([\w$]+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*\](?:\.([\w$]+))?$', re.I)


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str = "") -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


# --- tokens ------------------------------------------------------------------------------------------


def issue_token(name: str) -> str:
    """A new SCIM token for an IdP connection; the raw value is shown once and only its hash kept."""
    raw = "scim_" + secrets.token_urlsafe(32)
    ScimToken.objects.create(name=name, prefix=raw[:12], digest=_digest(raw))
    record("scim.token_issued", target=name, message=f"A SCIM token was made for {name}.")
    return raw


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _authenticated(request: HttpRequest) -> ScimToken | None:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    # A unique index on the hash: the lookup compares hashes, never the secret itself.
    token = ScimToken.objects.filter(digest=_digest(raw.strip()), revoked__isnull=True).first()
    if token is not None:
        ScimToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    return token


# --- the view plumbing -------------------------------------------------------------------------------


def scim_view(func: Callable[..., Any]) -> Callable[..., HttpResponse]:
    @csrf_exempt
    @functools.wraps(func)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        token = _authenticated(request)
        if token is None:
            answer = _error(ScimError(401, "A valid SCIM bearer token is needed."))
            answer["WWW-Authenticate"] = 'Bearer realm="clusterra-scim"'
            return answer
        request.scim_token = token
        try:
            status, body = func(request, *args, **kwargs)
        except ScimError as e:
            return _error(e)
        if status == 204:
            return HttpResponse(status=204)
        return _json(status, body)

    return wrapper


def _json(status: int, body: Any) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _error(e: ScimError) -> HttpResponse:
    body = {"schemas": [ERROR], "status": str(e.status), "detail": e.detail}
    if e.scim_type:
        body["scimType"] = e.scim_type
    return _json(e.status, body)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise ScimError(400, "The body is not JSON.", "invalidSyntax") from None
    if not isinstance(body, dict):
        raise ScimError(400, "The body must be a JSON object.", "invalidSyntax")
    return body


def _base(request: HttpRequest) -> str:
    return request.build_absolute_uri("/scim/v2")


def _method(request: HttpRequest, allowed: tuple[str, ...]) -> None:
    if request.method not in allowed:
        raise ScimError(405, f"{request.method} is not supported here; use {', '.join(allowed)}.")


# --- discovery ---------------------------------------------------------------------------------------


@scim_view
def service_provider_config(request: HttpRequest) -> tuple[int, Any]:
    _method(request, ("GET",))
    meta = {"resourceType": "ServiceProviderConfig", "location": f"{_base(request)}/ServiceProviderConfig"}
    return 200, SERVICE_PROVIDER_CONFIG | {"meta": meta}


@scim_view
def resource_types(request: HttpRequest, name: str | None = None) -> tuple[int, Any]:
    return _catalogue(request, RESOURCE_TYPES, name, "ResourceType", RESOURCE_TYPE_SCHEMA, "ResourceTypes")


@scim_view
def schemas(request: HttpRequest, urn: str | None = None) -> tuple[int, Any]:
    return _catalogue(request, SCHEMAS, urn, "Schema", SCHEMA_SCHEMA, "Schemas")


def _catalogue(
    request: HttpRequest, entries: dict[str, Any], key: str | None, kind: str, schema: str, folder: str
) -> tuple[int, Any]:
    """One of the discovery lists, or one entry of it by its id."""
    _method(request, ("GET",))
    items = {
        k: {
            "schemas": [schema],
            **v,
            "meta": {"resourceType": kind, "location": f"{_base(request)}/{folder}/{k}"},
        }
        for k, v in entries.items()
    }
    if key is not None:
        if key not in items:
            raise ScimError(404, f"No {kind} {key}.")
        return 200, items[key]
    return 200, _list(list(items.values()), 1, len(items))


def _list(resources: list[dict[str, Any]], start: int, total: int) -> dict[str, Any]:
    return {
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


@scim_view
def not_found(request: HttpRequest, rest: str = "") -> tuple[int, Any]:
    raise ScimError(404, f"No SCIM endpoint /{rest}.")


# --- Users and Groups --------------------------------------------------------------------------------


@scim_view
def collection(request: HttpRequest, kind: str) -> tuple[int, Any]:
    _method(request, ("GET", "POST"))
    if request.method == "POST":
        return 201, _render(request, _create(request, kind, _body(request)))
    return 200, _query(request, [kind], request.GET)


@scim_view
def search(request: HttpRequest, kind: str | None = None) -> tuple[int, Any]:
    """POST …/.search: a query in the body instead of the address (RFC 7644 §3.4.3)."""
    _method(request, ("POST",))
    body = _body(request)
    params = {
        "filter": body.get("filter") or "",
        "startIndex": body.get("startIndex"),
        "count": body.get("count"),
        "attributes": ",".join(body.get("attributes") or []),
        "excludedAttributes": ",".join(body.get("excludedAttributes") or []),
    }
    return 200, _query(request, [kind] if kind else ["User", "Group"], params)


def _query(request: HttpRequest, kinds: list[str], params: Any) -> dict[str, Any]:
    rows = (
        ScimResource.objects.filter(kind__in=kinds).select_related("user", "group").order_by("created", "id")
    )
    found = [r for r in rows if _matches(request, r, str(params.get("filter") or ""))]
    start = _whole(params.get("startIndex"), 1, minimum=1)
    count = min(_whole(params.get("count"), MAX_RESULTS, minimum=0), MAX_RESULTS)
    page = found[start - 1 : start - 1 + count]
    shown = [_projected(_render(request, r), params) for r in page]
    return _list(shown, start, len(found))


def _projected(resource: dict[str, Any], params: Any) -> dict[str, Any]:
    """`attributes` keeps only those (and id, schemas, meta); `excludedAttributes` drops those."""
    wanted = {a.split(".")[0].lower() for a in str(params.get("attributes") or "").split(",") if a.strip()}
    dropped = {
        a.split(".")[0].lower() for a in str(params.get("excludedAttributes") or "").split(",") if a.strip()
    }
    always = {"id", "schemas", "meta"}
    return {
        k: v
        for k, v in resource.items()
        if k in always or ((not wanted or _short(k).lower() in wanted) and _short(k).lower() not in dropped)
    }


@scim_view
def member(request: HttpRequest, kind: str, resource_id: str) -> tuple[int, Any]:
    _method(request, ("GET", "PUT", "PATCH", "DELETE"))
    row = _find(kind, resource_id)
    if request.method == "GET":
        return 200, _projected(_render(request, row), request.GET)
    if request.method == "DELETE":
        _delete(request, row)
        return 204, None
    body = _body(request)
    if request.method == "PUT":
        attributes = {k: v for k, v in body.items() if k not in ("schemas", "id", "meta")}
    else:
        if PATCH not in (body.get("schemas") or [PATCH]):
            raise ScimError(400, "A PATCH body is a PatchOp message.", "invalidSyntax")
        attributes = _patched(_current(row), body.get("Operations"))
    _apply(request, row, attributes)
    return 200, _render(request, row)


def _current(row: ScimResource) -> dict[str, Any]:
    """What a PATCH starts from: the stored attributes, with the console's own truth where it has one."""
    current = dict(row.attributes)
    if row.external_id:
        current["externalId"] = row.external_id
    if row.kind == "User" and row.user is not None and ("active" in current or not row.user.is_active):
        current["active"] = row.user.is_active
    if row.kind == "Group" and row.group is not None:
        users = ScimResource.objects.filter(kind="User", user__groups=row.group)
        current["members"] = [{"value": str(u.pk)} for u in users]
    return current


def _find(kind: str, resource_id: str) -> ScimResource:
    try:
        key = uuid.UUID(resource_id)
    except ValueError:
        raise ScimError(404, f"No {kind} {resource_id}.") from None
    row = ScimResource.objects.filter(kind=kind, pk=key).select_related("user", "group").first()
    if row is None:
        raise ScimError(404, f"No {kind} {resource_id}.")
    return row


def _whole(value: str | None, default: int, *, minimum: int) -> int:
    if value in (None, ""):
        return default
    try:
        return max(minimum, int(value))
    except ValueError:
        raise ScimError(400, f"{value!r} is not a whole number.", "invalidValue") from None


# --- creating, changing, deleting --------------------------------------------------------------------


def _create(request: HttpRequest, kind: str, body: dict[str, Any]) -> ScimResource:
    attributes = {k: v for k, v in body.items() if k not in ("schemas", "id", "meta")}
    row = ScimResource(id=uuid.uuid4(), kind=kind, attributes={})
    _apply(request, row, attributes, creating=True)
    return row


def _apply(
    request: HttpRequest, row: ScimResource, attributes: dict[str, Any], *, creating: bool = False
) -> None:
    attributes = _coerced(attributes)
    row.external_id = str(attributes.pop("externalId", "") or "")[:255]
    attributes.pop("groups", None)  # read-only: a person's groups follow the Groups' members
    if row.kind == ScimResource.Kind.USER:
        _apply_user(request, row, attributes, creating)
    else:
        _apply_group(request, row, attributes, creating)


def _apply_user(request: HttpRequest, row: ScimResource, attributes: dict[str, Any], creating: bool) -> None:
    name = attributes.get("userName")
    if not isinstance(name, str) or not name.strip():
        raise ScimError(400, "userName is required.", "invalidValue")
    clash = ScimResource.objects.filter(kind="User", attributes__userName__iexact=name).exclude(pk=row.pk)
    if clash.exists():
        raise ScimError(409, f"A user named {name} exists already.", "uniqueness")
    active = attributes.get("active", True)
    if not isinstance(active, bool):
        raise ScimError(400, "active is true or false.", "invalidValue")
    email = _primary_email(attributes)
    names = attributes.get("name") if isinstance(attributes.get("name"), dict) else {}
    with transaction.atomic():
        person = row.user
        if person is None:
            person = _existing_person(name, email) or User(username=_free_username(name))
        person.email = (email or person.email)[:254]
        person.first_name = str(names.get("givenName") or person.first_name)[:150]
        person.last_name = str(names.get("familyName") or person.last_name)[:150]
        was_active = person.is_active if person.pk else True
        if person.pk is None:
            person.is_active = active
            person.set_unusable_password()  # sign-in stays with the IdP
        elif active and not was_active and person.deactivated_reason in SCIM_REASONS:
            # Only what SCIM did, SCIM undoes: someone an administrator offboarded stays offboarded.
            person.is_active = True
            person.deactivated_at = None
        person.save()
        row.user = person
        row.attributes = attributes
        try:
            row.save()
        except IntegrityError:
            raise ScimError(
                409, f"{person.get_username()} is linked to another SCIM user already.", "uniqueness"
            ) from None
    verb = "created" if creating else "updated"
    record(
        f"scim.user_{verb}",
        actor=None,
        target=person.get_username(),
        message=f"{request.scim_token.name} {verb} {name} over SCIM.",
        request=request,
        details={"scim_id": str(row.pk), "active": active},
    )
    if was_active and not active and person.pk:
        offboarding.offboard(person, by=f"SCIM ({request.scim_token.name})", reason=DEACTIVATED)
    elif active and not was_active and not creating and person.is_active:
        record(
            "scim.user_reactivated",
            target=person.get_username(),
            request=request,
            message=f"{request.scim_token.name} reactivated {name}; their Linux accounts stay locked until "
            "an administrator resumes them.",
        )


def _existing_person(name: str, email: str) -> User | None:
    """A console person the IdP's new SCIM user already is (signed in before), if no SCIM user claims them."""
    candidates = User.objects.filter(scim__isnull=True)
    found = candidates.filter(username__iexact=name).first()
    if found is None and email:
        found = candidates.filter(email__iexact=email).first()
    return found


def _free_username(name: str) -> str:
    base = name.strip()[:140]
    candidate, n = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _apply_group(request: HttpRequest, row: ScimResource, attributes: dict[str, Any], creating: bool) -> None:
    name = attributes.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise ScimError(400, "displayName is required.", "invalidValue")
    members = attributes.get("members") or []
    if not isinstance(members, list):
        raise ScimError(400, "members is a list.", "invalidValue")
    ids = []
    for item in members:
        value = item.get("value") if isinstance(item, dict) else None
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            raise ScimError(400, f"{value!r} is not one of our User ids.", "invalidValue") from None
    people = {
        r.pk: r.user for r in ScimResource.objects.filter(kind="User", pk__in=ids).select_related("user")
    }
    if len(people) != len(set(ids)):
        raise ScimError(400, "A member is not a known User.", "invalidValue")
    with transaction.atomic():
        group = row.group
        taken = Group.objects.filter(name=name.strip()).exclude(pk=group.pk if group else None).first()
        if taken is not None and hasattr(taken, "scim"):
            raise ScimError(409, f"A group named {name} exists already.", "uniqueness")
        if group is None:
            group = taken or Group.objects.create(name=name.strip()[:150])
        elif group.name != name.strip():
            group.name = name.strip()[:150]
            group.save(update_fields=["name"])
        row.group = group
        row.attributes = {k: v for k, v in attributes.items() if k != "members"}
        row.save()
        wanted = {p.pk for p in people.values() if p is not None}
        current = set(group.user_set.values_list("pk", flat=True))
        if current - wanted:
            group.user_set.remove(*(current - wanted))
        if wanted - current:
            group.user_set.add(*(wanted - current))
    record(
        f"scim.group_{'created' if creating else 'updated'}",
        target=name,
        request=request,
        message=f"{request.scim_token.name} set group {name} over SCIM: {len(wanted)} members.",
        details={"scim_id": str(row.pk), "members": len(wanted)},
    )


def _delete(request: HttpRequest, row: ScimResource) -> None:
    if row.kind == ScimResource.Kind.USER and row.user is not None:
        person = row.user
        row.delete()
        # The person stays (their history, audit and Linux account records); they can do nothing any more.
        offboarding.offboard(person, by=f"SCIM ({request.scim_token.name})", reason=DELETED)
        return
    group = row.group
    row.delete()
    if group is not None:
        group.user_set.clear()
        record(
            "scim.group_deleted",
            target=group.name,
            request=request,
            message=f"{request.scim_token.name} deleted group {group.name}; its members left it.",
        )


# --- how a resource reads ----------------------------------------------------------------------------


def _render(request: HttpRequest, row: ScimResource) -> dict[str, Any]:
    location = f"{_base(request)}/{row.kind}s/{row.pk}"
    meta = {
        "resourceType": row.kind,
        "created": row.created.isoformat() if row.created else timezone.now().isoformat(),
        "lastModified": row.updated.isoformat() if row.updated else timezone.now().isoformat(),
        "location": location,
    }
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA if row.kind == "User" else GROUP_SCHEMA],
        "id": str(row.pk),
    }
    if row.external_id:
        body["externalId"] = row.external_id
    body |= row.attributes
    if row.kind == "User" and row.user is not None:
        if "active" in row.attributes or not row.user.is_active:
            body["active"] = row.user.is_active  # the console's truth: offboarded here is inactive there
        groups = ScimResource.objects.filter(kind="Group", group__user=row.user)
        if groups:
            body["groups"] = [
                {"value": str(g.pk), "display": g.attributes.get("displayName", "")} for g in groups
            ]
    elif row.group is not None:
        users = ScimResource.objects.filter(kind="User", user__groups=row.group)
        if users:
            body["members"] = [
                {"value": str(u.pk), "$ref": f"{_base(request)}/Users/{u.pk}", "type": "User"} for u in users
            ]
    body["meta"] = meta
    return body


def _matches(request: HttpRequest, row: ScimResource, expression: str) -> bool:
    if not expression.strip():
        return True
    found = _FILTER.match(expression)
    if not found:
        raise ScimError(
            400, f'Only `attribute eq "value"` filters are supported, not {expression!r}.', "invalidFilter"
        )
    path, wanted = found.group(1), json.loads(f'"{found.group(2)}"')
    path = _short(path)
    if path == "id":
        return str(row.pk) == wanted
    if path == "externalId":
        return row.external_id == wanted
    resource = _render(request, row)
    return any(str(v).lower() == wanted.lower() for v in _values_at(resource, path))


def _values_at(resource: dict[str, Any], path: str) -> list[Any]:
    value_path = _VALUE_PATH.match(path)
    if value_path:
        attribute, key, wanted, sub = value_path.groups()
        items = [i for i in resource.get(attribute) or [] if str(i.get(key, "")).lower() == wanted.lower()]
        return [i.get(sub) for i in items] if sub else items
    head, _, sub = path.partition(".")
    value = next((v for k, v in resource.items() if k.lower() == head.lower()), None)
    if sub:
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        return [i.get(sub) for i in items if isinstance(i, dict)]
    return value if isinstance(value, list) else [value]


# --- PATCH -------------------------------------------------------------------------------------------


def _patched(current: dict[str, Any], operations: Any) -> dict[str, Any]:
    """The attributes after the operations, applied in order; all or nothing (the caller saves)."""
    if not isinstance(operations, list) or not operations:
        raise ScimError(400, "A PATCH needs Operations.", "invalidSyntax")
    attributes = json.loads(json.dumps(current))
    for operation in operations:
        if not isinstance(operation, dict):
            raise ScimError(400, "Each operation is an object.", "invalidSyntax")
        op = str(operation.get("op", "")).lower()
        if op not in ("add", "replace", "remove"):
            raise ScimError(400, f"Unknown op {operation.get('op')!r}.", "invalidSyntax")
        path, value = operation.get("path"), operation.get("value")
        if not path:
            if op == "remove":
                raise ScimError(400, "remove needs a path.", "noTarget")
            if not isinstance(value, dict):
                raise ScimError(400, "Without a path the value is an object of attributes.", "invalidValue")
            # Entra's compliant dialect: one replace whose keys are paths ("name.givenName").
            for key, item in value.items():
                _set_path(attributes, _short(key), item, op)
            continue
        if op == "remove":
            _remove_path(attributes, _short(str(path)), value)
        else:
            _set_path(attributes, _short(str(path)), value, op)
    return attributes


def _short(path: str) -> str:
    for schema in (USER_SCHEMA, GROUP_SCHEMA):
        if path.lower().startswith(schema.lower() + ":"):
            return path[len(schema) + 1 :]
    return path


def _set_path(attributes: dict[str, Any], path: str, value: Any, op: str) -> None:
    value_path = _VALUE_PATH.match(path)
    if value_path:
        attribute, key, wanted, sub = value_path.groups()
        items = attributes.setdefault(attribute, [])
        chosen = [i for i in items if isinstance(i, dict) and str(i.get(key, "")).lower() == wanted.lower()]
        if not chosen:
            chosen = [{key: wanted}]
            items.append(chosen[0])
        for item in chosen:
            if sub:
                item[sub] = value
            elif isinstance(value, dict):
                item.update(value)
        return
    head, _, sub = path.partition(".")
    head = next((k for k in attributes if k.lower() == head.lower()), head)
    if sub:
        target = attributes.setdefault(head, {})
        if not isinstance(target, dict):
            raise ScimError(400, f"{head} has no sub-attributes.", "invalidPath")
        target[sub] = value
        return
    if op == "add" and isinstance(attributes.get(head), list):
        extra = value if isinstance(value, list) else [value]
        attributes[head] = attributes[head] + [v for v in extra if v not in attributes[head]]
    elif op == "add" and isinstance(attributes.get(head), dict) and isinstance(value, dict):
        attributes[head] = attributes[head] | value
    else:
        attributes[head] = value


def _remove_path(attributes: dict[str, Any], path: str, value: Any) -> None:
    value_path = _VALUE_PATH.match(path)
    if value_path:
        attribute, key, wanted, sub = value_path.groups()
        items = attributes.get(attribute) or []
        keep = []
        for item in items:
            if isinstance(item, dict) and str(item.get(key, "")).lower() == wanted.lower():
                if sub:
                    item.pop(sub, None)
                    keep.append(item)
                continue
            keep.append(item)
        attributes[attribute] = keep
        return
    head, _, sub = path.partition(".")
    head = next((k for k in attributes if k.lower() == head.lower()), head)
    if sub:
        if isinstance(attributes.get(head), dict):
            attributes[head].pop(sub, None)
        return
    if isinstance(value, list) and isinstance(attributes.get(head), list):
        # Entra's member removal: {"op": "Remove", "path": "members", "value": [{"value": id}]}
        gone = {str(v.get("value")) for v in value if isinstance(v, dict)}
        attributes[head] = [i for i in attributes[head] if str(i.get("value")) not in gone]
        return
    attributes.pop(head, None)


def _coerced(attributes: dict[str, Any]) -> dict[str, Any]:
    """Entra sends booleans as "True"/"False" strings; they are booleans here."""

    def fix(key: str, value: Any) -> Any:
        if key in BOOLEANS and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, dict):
            return {k: fix(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(key, v) for v in value]
        return value

    return {k: fix(k, v) for k, v in attributes.items()}


def _primary_email(attributes: dict[str, Any]) -> str:
    emails = [
        e for e in attributes.get("emails") or [] if isinstance(e, dict) and isinstance(e.get("value"), str)
    ]
    primary = next((e for e in emails if e.get("primary") is True), emails[0] if emails else None)
    if primary:
        return primary["value"]
    name = attributes.get("userName", "")
    return name if isinstance(name, str) and "@" in name else ""
