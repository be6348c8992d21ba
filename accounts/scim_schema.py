"""What the console's SCIM 2.0 endpoint declares: the attributes it keeps, its resource types, its features.

Only the attributes the console uses are declared (RFC 7643 lets a provider publish a subset):
a person's userName, names, e-mails and active flag, and a group's name and members. Clients
(Okta, Entra ID, scim2-tester) read these and send only what is declared.
"""

from __future__ import annotations

from typing import Any

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
MAX_RESULTS = 200


def _attribute(name: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "multiValued": False,
        "description": "",
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    } | extra


SCHEMAS: dict[str, dict[str, Any]] = {
    USER_SCHEMA: {
        "id": USER_SCHEMA,
        "name": "User",
        "description": "A person who signs in to the console through the identity provider.",
        "attributes": [
            _attribute(
                "userName", required=True, uniqueness="server", description="Unique; the IdP's login."
            ),
            _attribute(
                "name",
                "complex",
                subAttributes=[_attribute("givenName"), _attribute("familyName"), _attribute("formatted")],
            ),
            _attribute("displayName"),
            _attribute(
                "emails",
                "complex",
                multiValued=True,
                subAttributes=[
                    _attribute("value"),
                    _attribute("type", canonicalValues=["work", "home", "other"]),
                    _attribute("primary", "boolean"),
                ],
            ),
            _attribute("active", "boolean", description="false: the person is offboarded at once."),
            _attribute(
                "groups",
                "complex",
                multiValued=True,
                mutability="readOnly",
                subAttributes=[
                    _attribute("value", mutability="readOnly"),
                    _attribute("display", mutability="readOnly"),
                ],
            ),
        ],
    },
    GROUP_SCHEMA: {
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "A console group; grants and quotas given to it apply to its members.",
        "attributes": [
            _attribute("displayName", required=True, uniqueness="server"),
            _attribute(
                "members",
                "complex",
                multiValued=True,
                subAttributes=[
                    _attribute("value", mutability="immutable"),
                    _attribute("display", mutability="readOnly"),
                    _attribute("$ref", "reference", mutability="immutable", referenceTypes=["User"]),
                    _attribute("type", mutability="immutable", canonicalValues=["User"]),
                ],
            ),
        ],
    },
}

RESOURCE_TYPES: dict[str, dict[str, Any]] = {
    "User": {"id": "User", "name": "User", "endpoint": "/Users", "schema": USER_SCHEMA},
    "Group": {"id": "Group", "name": "Group", "endpoint": "/Groups", "schema": GROUP_SCHEMA},
}

SERVICE_PROVIDER_CONFIG: dict[str, Any] = {
    "schemas": [SPC_SCHEMA],
    "documentationUri": "https://github.com/clusterra/console#scim",
    "patch": {"supported": True},
    "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
    "filter": {"supported": True, "maxResults": MAX_RESULTS},
    "changePassword": {"supported": False},
    "sort": {"supported": False},
    "etag": {"supported": False},
    "authenticationSchemes": [
        {
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A token made in the console's admin (SCIM tokens), sent as a Bearer token.",
            "primary": True,
        }
    ],
}
