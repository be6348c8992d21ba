"""The /v1 reference page: the OpenAPI document rendered on the server, as the console's other pages are.

Rendered here rather than by Swagger UI so the page is plain HTML under the site's CSP (no script,
no CDN) and readable without JavaScript; it shows exactly what /v1/openapi.json says.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

METHODS = ("get", "post", "delete")


def page(request: HttpRequest, document: dict[str, Any]) -> HttpResponse:
    schemas = document["components"]["schemas"]
    return render(
        request,
        "jobs/api_docs.html",
        {
            "doc": document,
            "operations": operations(document),
            "schemas": [
                (name, spec.get("description", ""), schema_rows(spec)) for name, spec in schemas.items()
            ],
        },
    )


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document flattened for the page: one entry per method and path."""
    result = []
    for route_path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            result.append(
                {
                    "method": method.upper(),
                    "path": "/v1" + route_path,
                    "op": op,
                    "parameters": shared + op.get("parameters", []),
                    "body": _name(body),
                    "responses": [
                        (code, r["description"], _schema_name(r))
                        for code, r in sorted(op["responses"].items())
                    ],
                }
            )
    return result


def _schema_name(response: dict[str, Any]) -> str:
    for content in response.get("content", {}).values():
        name = _name(content.get("schema", {}))
        if name:
            return name
    return ""


def _name(spec: dict[str, Any]) -> str:
    return spec.get("$ref", "").rsplit("/", 1)[-1]


def schema_rows(schema: dict[str, Any]) -> list[tuple[str, str, bool, str]]:
    """(field, type, required, description) of one component schema."""
    required = set(schema.get("required", []))
    return [
        (prop, _type_words(spec), prop in required, spec.get("description", ""))
        for prop, spec in schema.get("properties", {}).items()
    ]


def _type_words(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return _name(spec)
    for choice, words in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if choice in spec:
            return words.join(_type_words(s) for s in spec[choice])
    kind = spec.get("type", "object")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        return f"array of {_type_words(spec.get('items', {}))}"
    return kind
