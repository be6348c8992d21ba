"""/v1/openapi.json: a valid OpenAPI 3 document that describes every /v1 route, and /v1/docs renders it."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, get_resolver

from accounts import api_tokens
from accounts.models import User
from clusterra_site import api
from tests.conftest import require

try:
    from openapi_spec_validator import validate
except ImportError:  # pragma: no cover - the dev dependencies provide it
    validate = None

pytestmark = pytest.mark.django_db


def openapi_path(route: str) -> str:
    """Django's "clusters/<slug:id>/jobs/<int:job_id>" as OpenAPI's "/clusters/{id}/jobs/{job_id}"."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def v1_patterns() -> list[URLPattern]:
    """Every route under /v1 but the catch-all that answers 404 in the error shape."""
    for entry in get_resolver().url_patterns:
        if str(entry.pattern) == "v1/":
            return [p for p in entry.url_patterns if p.name != api.NOT_FOUND_ROUTE]
    raise AssertionError("no v1/ include in the URL map")


def test_it_is_a_valid_openapi_3_document(client):
    require(validate is not None, "openapi-spec-validator is not installed (pip install -e '.[dev]')")
    r = client.get("/v1/openapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["openapi"].startswith("3.")
    validate(document)
    assert document["servers"] == [{"url": "http://testserver/v1"}]


def served_methods(client, route: str, auth: dict[str, str]) -> set[str]:
    """The methods a /v1 route answers with anything but 405 (with a token, so no 401 hides a 405)."""
    url = "/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", "1", route)
    methods = ("get", "post", "put", "patch", "delete")
    return {m for m in methods if getattr(client, m)(url, **auth).status_code != 405}


def test_every_v1_route_and_method_appears_in_the_document(client):
    document = client.get("/v1/openapi.json").json()
    patterns = v1_patterns()
    assert len(patterns) == len(document["paths"])
    _, token = api_tokens.issue(User.objects.create(username="reader"), name="openapi")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for pattern in patterns:
        path = openapi_path(str(pattern.pattern))
        assert path in document["paths"], f"{path} is routed but not documented"
        documented = {m for m in document["paths"][path] if m in ("get", "post", "put", "patch", "delete")}
        served = served_methods(client, str(pattern.pattern), auth)
        assert documented == served, path
        for name in re.findall(r"{(\w+)}", path):
            parameters = document["paths"][path].get("parameters", [])
            assert any(p["name"] == name and p["in"] == "path" for p in parameters), f"{name} of {path}"


def test_the_contract_routes_are_all_there(client):
    paths = client.get("/v1/openapi.json").json()["paths"]
    for path, methods in {
        "/me": {"get"},
        "/clusters": {"get"},
        "/clusters/{id}/partitions": {"get"},
        "/clusters/{id}/jobs": {"get", "post"},
        "/clusters/{id}/jobs/{job_id}": {"get", "delete"},
        "/clusters/{id}/jobs/{job_id}/output": {"get"},
        "/clusters/{id}/quota": {"get"},
    }.items():
        assert methods <= set(paths[path]), path


def test_every_operation_documents_its_errors_in_the_one_error_shape(client):
    document = client.get("/v1/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or operation.get("security") == []:
                continue
            assert "401" in operation["responses"], f"{method} {path}"
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {code}"
    post = document["paths"]["/clusters/{id}/jobs"]["post"]
    assert {p["name"] for p in post["parameters"]} == {"dry_run", "Idempotency-Key"}
    body = document["components"]["schemas"]["SubmitRequest"]
    assert set(body["properties"]) == {
        "script_path",
        "partition",
        "time_limit",
        "nodes",
        "cpus_per_task",
        "gpus",
        "name",
        "working_directory",
        "script",
        "options",
    }
    assert "required" not in body
    assert body["oneOf"] == [{"required": ["script_path"]}, {"required": ["script"]}]


def test_the_document_and_its_page_need_no_token(client):
    assert client.get("/v1/openapi.json").status_code == 200
    page = client.get("/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<code>POST /v1/clusters/{id}/jobs</code>" in html
    assert "Idempotency-Key" in html
    assert 'id="schema-SubmitRequest"' in html
    assert "cdn" not in html.lower()


def test_the_route_table_is_what_the_document_is_built_from():
    assert [openapi_path(str(p.pattern)) for p in v1_patterns()] == list(api.document()["paths"])


def test_an_unknown_api_path_is_404_in_the_error_shape(client):
    r = client.get("/v1/clusters/demo/jobs/not-a-number")
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "code": "not_found",
            "message": "There is no API route /v1/clusters/demo/jobs/not-a-number; /v1/docs lists them.",
        }
    }
