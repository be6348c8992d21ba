"""The /v1 router: one route table that makes both the URL patterns and the published OpenAPI document.

Each route names its Django path, its OpenAPI path and, per method, the handler and
what the document says about it. urlpatterns and `/v1/openapi.json` are both built
from ROUTES, so a route cannot exist without being documented (a test checks the
reverse too: every pattern under /v1 appears in the document).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from access import policy
from access.quota import quota_status
from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import SlurmError
from jobs import api as job_api
from jobs import partitions
from jobs.http import ApiError, cluster_or_404, error_response, methods

API_VERSION = "1.0.0"
NOT_FOUND_ROUTE = "v1-not-found"


# --- the non-job handlers -----------------------------------------------------------------------


def me(request: HttpRequest) -> JsonResponse:
    person = request.user
    account = getattr(person, "posix_account", None)
    usable = [c.slug for c in Cluster.objects.filter(enabled=True) if _may_view(person, c, request)]
    return JsonResponse(
        {
            "username": person.get_username(),
            "email": person.email,
            "name": person.get_full_name(),
            "is_staff": person.is_staff,
            "posix_account": (
                {"username": account.username, "uid": account.uid, "gid": account.gid} if account else None
            ),
            "clusters": usable,
        }
    )


def _may_view(person: Any, cluster: Cluster, request: HttpRequest) -> bool:
    return policy.decide(person, "cluster.view", cluster, http_request=request).allowed


def cluster_dict(cluster: Cluster, person: Any) -> dict[str, Any]:
    granted = policy.granted_partitions(person, cluster)
    return {
        "id": cluster.slug,
        "name": cluster.name,
        "granted_partitions": granted,
        "terminal_url": f"/clusters/{cluster.slug}/terminal/",
        "partitions_url": f"/v1/clusters/{cluster.slug}/partitions",
        "jobs_url": f"/v1/clusters/{cluster.slug}/jobs",
        "quota_url": f"/v1/clusters/{cluster.slug}/quota",
    }


def list_clusters(request: HttpRequest) -> JsonResponse:
    clusters = [
        cluster_dict(c, request.user)
        for c in Cluster.objects.filter(enabled=True).order_by("name")
        if _may_view(request.user, c, request)
    ]
    return JsonResponse({"clusters": clusters})


def _viewable(request: HttpRequest, slug: str) -> Cluster:
    cluster = cluster_or_404(slug)
    decision = policy.decide(request.user, "cluster.view", cluster, http_request=request)
    if not decision.allowed:
        raise ApiError(403, decision.code, decision.message)
    return cluster


def list_partitions(request: HttpRequest, id: str) -> JsonResponse:
    cluster = _viewable(request, id)
    try:
        known = [p.name for p in partitions.partitions(cluster)]
        granted = policy.granted_partitions(request.user, cluster, known)
        views = partitions.views(cluster, granted)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        raise ApiError(502, "cluster_unavailable", f"{cluster.name} did not answer: {e}") from None
    return JsonResponse({"cluster": cluster.slug, "partitions": [v.as_dict() for v in views]})


def quota(request: HttpRequest, id: str) -> JsonResponse:
    cluster = _viewable(request, id)
    return JsonResponse(
        {"cluster": cluster.slug, "quotas": [q.as_json() for q in quota_status(request.user, cluster)]}
    )


# --- the route table ----------------------------------------------------------------------------


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


ERRORS = {
    "400": _error(
        "The request is malformed, or the script or its directives cannot be used "
        "(the message says which line)."
    ),
    "401": _error("No API token, or one that is unknown, revoked or expired."),
    "403": _error("Not allowed: the message is the policy decision's sentence, with the numbers."),
    "404": _error("No such cluster, or no such job of yours (someone else's job answers the same)."),
    "409": _error("A conflict: the job already ended, or an Idempotency-Key reused for another request."),
    "502": _error("The cluster (slurmrestd or its head node) did not answer; nothing was changed."),
}
CLUSTER_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The cluster's slug, as `GET /v1/clusters` lists it (e.g. `demo`).",
    "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
}
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The Slurm job id.",
    "schema": {"type": "integer", "minimum": 0},
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in codes}


@dataclass(frozen=True)
class Operation:
    handler: Any
    operation_id: str
    summary: str
    responses: dict[str, Any]
    description: str = ""
    parameters: tuple[dict[str, Any], ...] = ()
    request_body: dict[str, Any] | None = None
    public: bool = False
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    django_path: str
    openapi_path: str
    name: str
    operations: dict[str, Operation] = field(default_factory=dict)
    path_parameters: tuple[dict[str, Any], ...] = ()


def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document(request), json_dumps_params={"indent": 1})


@login_not_required
def docs(request: HttpRequest) -> HttpResponse:
    doc = document(request)
    schemas = [(name, SCHEMAS[name].get("description", ""), schema_rows(name)) for name in SCHEMAS]
    return render(
        request, "jobs/api_docs.html", {"doc": doc, "operations": _operations(doc), "schemas": schemas}
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "me",
        "/me",
        "v1-me",
        {
            "get": Operation(
                me,
                "getMe",
                "Who the token belongs to",
                {
                    "200": _ok(
                        "The person, their POSIX account (once made) and the clusters they may use.", "Me"
                    ),
                    **_errors("401"),
                },
                tags=("people",),
            )
        },
    ),
    Route(
        "clusters",
        "/clusters",
        "v1-clusters",
        {
            "get": Operation(
                list_clusters,
                "listClusters",
                "The clusters you may use",
                {
                    "200": _ok("Enabled clusters where the policy lets you in.", "ClusterList"),
                    **_errors("401"),
                },
                tags=("clusters",),
            )
        },
    ),
    Route(
        "clusters/<slug:id>/partitions",
        "/clusters/{id}/partitions",
        "v1-partitions",
        {
            "get": Operation(
                list_partitions,
                "listPartitions",
                "Partitions, their state and what their nodes are doing",
                {
                    "200": _ok(
                        "Each partition, whether you may submit to it, "
                        "and idle / allocated nodes, CPUs and GPUs.",
                        "PartitionList",
                    ),
                    **_errors("401", "403", "404", "502"),
                },
                tags=("clusters",),
            )
        },
        (CLUSTER_ID,),
    ),
    Route(
        "clusters/<slug:id>/quota",
        "/clusters/{id}/quota",
        "v1-quota",
        {
            "get": Operation(
                quota,
                "getQuota",
                "Your quotas and budgets on the cluster",
                {
                    "200": _ok(
                        "Every quota that applies to you (yours, then your groups'), "
                        "with use and what is left.",
                        "QuotaList",
                    ),
                    **_errors("401", "403", "404"),
                },
                tags=("clusters",),
            )
        },
        (CLUSTER_ID,),
    ),
    Route(
        "clusters/<slug:id>/jobs",
        "/clusters/{id}/jobs",
        "v1-jobs",
        {
            "get": Operation(
                job_api.list_jobs,
                "listJobs",
                "Your jobs on the cluster, newest first",
                {
                    "200": _ok(
                        "One page of your jobs; with update_time only the jobs that changed since.", "JobList"
                    ),
                    **_errors("400", "401", "403", "404"),
                },
                description="Jobs submitted through the console and those the sync loop saw you "
                "submit elsewhere "
                "(sbatch in a terminal). States are Slurm's words.",
                parameters=(
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "description": "Comma-separated Slurm states "
                        "(PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, …), "
                        "or `active` / `finished`. Case does not matter.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "partition",
                        "in": "query",
                        "required": False,
                        "description": "Only jobs in this partition.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "page",
                        "in": "query",
                        "required": False,
                        "description": "Page number, from 1. A page past the last answers with the "
                        "last page (the answer's `page` says which); anything but a whole number from 1 "
                        "is a 400.",
                        "schema": {"type": "integer", "minimum": 1, "default": 1},
                    },
                    {
                        "name": "per_page",
                        "in": "query",
                        "required": False,
                        "description": "Jobs per page (at most 200).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                    {
                        "name": "update_time",
                        "in": "query",
                        "required": False,
                        "description": "Seconds since the epoch, as a previous answer's `update_time`: "
                        "only jobs changed since then.",
                        "schema": {"type": "number"},
                    },
                ),
                tags=("jobs",),
            ),
            "post": Operation(
                job_api.submit_job,
                "submitJob",
                "Submit a job script that is on the cluster",
                {
                    "200": _ok(
                        "A dry run's decision and final job, or the job an earlier request "
                        "with the same Idempotency-Key queued.",
                        "SubmitResult",
                    ),
                    "201": _ok("The job is queued.", "SubmitResult"),
                    **_errors("400", "401", "403", "404", "409", "502"),
                    "415": _error("The body is not application/json."),
                },
                description="The script is read as you on the head node; "
                "its #SBATCH directives are merged with the "
                "fields here (the fields win); the policy decides and reserves budget; then Slurm queues it. "
                "A denial is 403 with the decision's sentence and nothing reaches Slurm.",
                parameters=(
                    {
                        "name": "dry_run",
                        "in": "query",
                        "required": False,
                        "description": "`1` to get the decision and the final job without queueing anything.",
                        "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Any unique string (a UUID): a retry with the same key and body "
                        "returns the first job "
                        "instead of queueing another; the same key with another body is 409.",
                        "schema": {"type": "string", "maxLength": 255},
                    },
                ),
                request_body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}}
                    },
                },
                tags=("jobs",),
            ),
        },
        (CLUSTER_ID,),
    ),
    Route(
        "clusters/<slug:id>/jobs/<int:job_id>",
        "/clusters/{id}/jobs/{job_id}",
        "v1-job",
        {
            "get": Operation(
                job_api.show_job,
                "getJob",
                "One of your jobs, its state read live from Slurm",
                {
                    "200": _ok("The job; `note` says when the live state could not be read.", "JobDetail"),
                    **_errors("401", "403", "404"),
                },
                tags=("jobs",),
            ),
            "delete": Operation(
                job_api.cancel_job,
                "cancelJob",
                "Cancel one of your jobs",
                {
                    "200": _ok("Cancelled; the job as Slurm reports it afterwards.", "CancelResult"),
                    **_errors("401", "403", "404", "409", "502"),
                },
                tags=("jobs",),
            ),
        },
        (CLUSTER_ID, JOB_ID),
    ),
    Route(
        "clusters/<slug:id>/jobs/<int:job_id>/output",
        "/clusters/{id}/jobs/{job_id}/output",
        "v1-job-output",
        {
            "get": Operation(
                job_api.job_output,
                "getJobOutput",
                "The last lines of a job's stdout and stderr, read as the job's owner",
                {
                    "200": _ok("Each stream's text, or why it cannot be shown (`error`).", "JobOutput"),
                    **_errors("400", "401", "403", "404"),
                },
                parameters=(
                    {
                        "name": "lines",
                        "in": "query",
                        "required": False,
                        "description": "How many lines from the end (at most 2000).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 2000, "default": 50},
                    },
                    {
                        "name": "stream",
                        "in": "query",
                        "required": False,
                        "description": "Which stream.",
                        "schema": {"type": "string", "enum": ["stdout", "stderr", "both"], "default": "both"},
                    },
                ),
                tags=("jobs",),
            )
        },
        (CLUSTER_ID, JOB_ID),
    ),
    Route(
        "openapi.json",
        "/openapi.json",
        "v1-openapi",
        {
            "get": Operation(
                openapi_json,
                "getOpenApi",
                "This document",
                {
                    "200": {
                        "description": "The OpenAPI 3 document of /v1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
                public=True,
                tags=("documentation",),
            )
        },
    ),
    Route(
        "docs",
        "/docs",
        "v1-docs",
        {
            "get": Operation(
                docs,
                "getDocs",
                "This document as a web page",
                {
                    "200": {
                        "description": "The API reference as HTML.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                public=True,
                tags=("documentation",),
            )
        },
    ),
)


def _view(route: Route):
    operations = route.operations
    if all(op.public for op in operations.values()):
        # The document and its page need no token: a person reads them before having one.
        return login_not_required(require_GET(operations["get"].handler))
    return methods(**{method: op.handler for method, op in operations.items()})


@csrf_exempt
def not_found(request: HttpRequest, rest: str) -> JsonResponse:
    """Anything else under /v1 answers in the API's error shape, not with an HTML page."""
    return error_response(404, "not_found", f"There is no API route /v1/{rest}; /v1/docs lists them.")


urlpatterns = [path(route.django_path, _view(route), name=route.name) for route in ROUTES]
# Last, and not an operation of the API (the document does not list it): the JSON 404.
urlpatterns.append(re_path(r"^(?P<rest>.*)$", not_found, name=NOT_FOUND_ROUTE))


# --- the OpenAPI document -----------------------------------------------------------------------


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


def _integer(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "description": description, **extra}


def _object(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


DECISION = _object(
    {
        "allowed": {"type": "boolean"},
        "code": _string("A stable code: `ok`, `replayed`, or why not (`no_grant`, `gpu_budget`, …)."),
        "message": _string("One sentence with the numbers; pages, API and CLI show it as it is."),
        "facts": {
            "type": "object",
            "description": "The numbers behind the sentence.",
            "additionalProperties": True,
        },
    }
)
JOB = _object(
    {
        "id": _integer("The Slurm job id."),
        "cluster": _string("The cluster's slug."),
        "name": _string("The job's name."),
        "user": _string("The POSIX user the job runs as."),
        "origin": _string("Where it was submitted.", enum=["console", "outside"]),
        "partition": _string("Slurm partition."),
        "account": _string("Slurm account."),
        "qos": _string("Slurm QOS."),
        "state": _string("Slurm's job state, e.g. PENDING, RUNNING, COMPLETED."),
        "state_text": _string("The state in plain words."),
        "reason": _string("Slurm's state reason, e.g. Resources (empty when there is none)."),
        "reason_text": _string("The reason in plain words."),
        "policy_note": _string(
            "Why the console cancelled the job, when the policy stopped allowing it (empty otherwise)."
        ),
        "submit_time": _nullable(_string("When it was submitted (ISO 8601, UTC).", format="date-time")),
        "start_time": _nullable(_string("When it started.", format="date-time")),
        "end_time": _nullable(_string("When it ended.", format="date-time")),
        "elapsed_seconds": _nullable(_integer("Seconds it has run.")),
        "elapsed": _string("The same as Slurm writes it, [D-]HH:MM:SS (empty before it starts)."),
        "time_limit": _nullable(_integer("Time limit in minutes.")),
        "nodes": _integer("Node count."),
        "node_list": _string("The nodes it runs or ran on (a Slurm hostlist)."),
        "cpus": _integer("CPUs in total."),
        "gpus": _integer("GPUs in total."),
        "memory_mb": _nullable(_integer("Memory per node in MB.")),
        "exit_code": _nullable(_integer("The script's exit status once it ended.")),
        "exit_signal": _nullable(_integer("The signal that ended it, if one did.")),
        "script_path": _string("The script's path on the cluster (empty for jobs from outside the console)."),
        "working_directory": _string("The job's working directory."),
        "stdout_path": _string("Where its standard output goes."),
        "stderr_path": _string("Where its standard error goes."),
        "terminal_url": _string("The console page of a terminal in the working directory."),
        "url": _string("This job in the API."),
        "page_url": _string("This job's page in the console."),
    }
)
FINAL_JOB = _object(
    {
        "script_path": _string("The script."),
        "name": _nullable(_string("Job name.")),
        "partition": _nullable(_string("Partition.")),
        "time_limit": _nullable(_integer("Minutes.")),
        "nodes": _nullable(_integer("Nodes.")),
        "ntasks": _nullable(_integer("Tasks, when the script says.")),
        "cpus_per_task": _nullable(_integer("CPUs per task.")),
        "cpus": _integer("CPUs in total."),
        "gpus": _integer("GPUs in total."),
        "memory_mb": _nullable(_integer("Memory per node in MB, when the script says.")),
        "working_directory": _string("Working directory."),
        "standard_output": _nullable(_string("--output, when the script says.")),
        "standard_error": _nullable(_string("--error, when the script says.")),
        "account": _nullable(_string("--account, when the script says.")),
        "qos": _nullable(_string("--qos, when the script says.")),
        "user": _string("The POSIX user it runs as."),
        "sources": {
            "type": "object",
            "description": "Where each value came from: `request`, `script line N`, `partition default`, …",
            "additionalProperties": {"type": "string"},
        },
    }
)
OUTPUT_STREAM = _object(
    {
        "path": _string("The file read."),
        "text": _string("Its last lines."),
        "error": _string("Why it cannot be shown (empty when it can)."),
        "truncated": {
            "type": "boolean",
            "description": "The lines were longer than the console shows at once.",
        },
        "same_as_stdout": {"type": "boolean", "description": "stderr goes to the same file as stdout."},
    }
)
QUOTA = _object(
    {
        "scope": _string("Whose quota: `you` or `group NAME`."),
        "quota_id": _nullable(_integer("The quota's id.")),
        "period": _string("day, week or month.", enum=["day", "week", "month"]),
        "period_start": _string("When the current period started.", format="date-time"),
        "renews": _string("When the next period starts.", format="date-time"),
        **{
            f"{kind}_hours_{what}": (
                _nullable({"type": "number", "description": f"{kind.upper()}-hours {what}."})
                if what in ("limit", "left")
                else {"type": "number", "description": f"{kind.upper()}-hours {what}."}
            )
            for kind in ("gpu", "cpu")
            for what in ("limit", "used", "reserved", "left")
        },
        "max_running_jobs": _nullable(_integer("Limit of running jobs.")),
        "running_jobs": _integer("Running jobs now."),
        "max_queued_jobs": _nullable(_integer("Limit of queued jobs.")),
        "queued_jobs": _integer("Queued jobs now."),
        "max_nodes_per_job": _nullable(_integer("Per-job node limit.")),
        "max_cpus_per_job": _nullable(_integer("Per-job CPU limit.")),
        "max_gpus_per_job": _nullable(_integer("Per-job GPU limit.")),
        "max_walltime": _nullable(_integer("Per-job walltime limit in minutes.")),
    }
)
COUNTS = _object(
    {"total": {"type": "integer"}, "idle": {"type": "integer"}, "allocated": {"type": "integer"}}
)
SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": _string("A stable code, e.g. `no_grant`, `not_found`, `cluster_unavailable`."),
                    "message": _string("What happened and what to do, in one or two sentences."),
                }
            )
        }
    ),
    "Me": _object(
        {
            "username": _string("The console user name."),
            "email": _string("E-mail address."),
            "name": _string("Full name."),
            "is_staff": {"type": "boolean"},
            "posix_account": {
                "oneOf": [
                    _object(
                        {"username": _string("POSIX name."), "uid": _integer("UID."), "gid": _integer("GID.")}
                    ),
                    {"type": "null"},
                ],
                "description": "The Linux account the console made for you "
                "(null until the first use of a cluster).",
            },
            "clusters": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Slugs of the clusters you may use.",
            },
        }
    ),
    "Cluster": _object(
        {
            "id": _string("The slug used in URLs."),
            "name": _string("Display name."),
            "granted_partitions": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Partitions you may submit to; `*` means all of them.",
            },
            "terminal_url": _string("The browser terminal page."),
            "partitions_url": _string("API URL of its partitions."),
            "jobs_url": _string("API URL of your jobs there."),
            "quota_url": _string("API URL of your quotas there."),
        }
    ),
    "ClusterList": _object(
        {"clusters": {"type": "array", "items": {"$ref": "#/components/schemas/Cluster"}}}
    ),
    "Partition": _object(
        {
            "name": _string("Partition name."),
            "state": _string("Slurm's state, e.g. UP."),
            "default": {"type": "boolean", "description": "Slurm's default partition."},
            "granted": {"type": "boolean", "description": "You may submit to it."},
            "max_time_limit": _nullable(_integer("MaxTime in minutes (null: unlimited).")),
            "default_time_limit": _nullable(_integer("DefaultTime in minutes.")),
            "nodes": _object(
                {**COUNTS["properties"], "other": {"type": "integer", "description": "Down or drained."}}
            ),
            "cpus": COUNTS,
            "gpus": COUNTS,
        }
    ),
    "PartitionList": _object(
        {
            "cluster": _string("The cluster."),
            "partitions": {"type": "array", "items": {"$ref": "#/components/schemas/Partition"}},
        }
    ),
    "Quota": QUOTA,
    "QuotaList": _object(
        {
            "cluster": _string("The cluster."),
            "quotas": {"type": "array", "items": {"$ref": "#/components/schemas/Quota"}},
        }
    ),
    "Job": JOB,
    "JobList": _object(
        {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "page": _integer("This page: the last one when a later page was asked for."),
            "per_page": _integer("Jobs per page."),
            "total": _integer("Jobs matching the filters."),
            "pages": _integer("Pages in all."),
            "update_time": {
                "type": "number",
                "description": "Pass it back as update_time to get only later changes.",
            },
        }
    ),
    "JobDetail": _object(
        {
            "job": {"$ref": "#/components/schemas/Job"},
            "note": _string("Why the live state could not be read (empty if it was)."),
        }
    ),
    "CancelResult": _object(
        {"job": {"$ref": "#/components/schemas/Job"}, "message": _string("What happened.")}
    ),
    "JobOutput": _object(
        {
            "job_id": _integer("The job."),
            "lines": _integer("Lines asked for."),
            "stdout": {"$ref": "#/components/schemas/OutputStream"},
            "stderr": {"$ref": "#/components/schemas/OutputStream"},
        },
        required=["job_id", "lines"],
    ),
    "OutputStream": OUTPUT_STREAM,
    "Decision": DECISION,
    "FinalJob": FINAL_JOB,
    "SubmitRequest": _object(
        {
            "script_path": _string(
                "Absolute path of the script on the cluster, under one of its allowed folders; read as you.",
                minLength=1,
            ),
            "partition": _string("Partition (default: the script's --partition, then Slurm's default)."),
            "time_limit": {
                "oneOf": [
                    {"type": "integer", "minimum": 1},
                    {
                        "type": "string",
                        "description": "A Slurm time: minutes, m:s, h:m:s, d-h, d-h:m, d-h:m:s.",
                    },
                ],
                "description": "Minutes (default: the script's --time, "
                "then the partition's default, then the console's).",
            },
            "nodes": _integer("Nodes (default: the script's --nodes, then 1).", minimum=1),
            "cpus_per_task": _integer(
                "CPUs per task (default: the script's --cpus-per-task, then 1).", minimum=1
            ),
            "gpus": _integer(
                "GPUs for the whole job (default: the script's --gpus / --gres, then 0).", minimum=0
            ),
            "name": _string(
                "Job name (default: the script's --job-name, then the file name).", maxLength=200
            ),
            "working_directory": _string(
                "Working directory (default: the script's --chdir, then the script's folder)."
            ),
        },
        required=["script_path"],
        additionalProperties=False,
    ),
    "SubmitResult": _object(
        {
            "dry_run": {"type": "boolean"},
            "replayed": {
                "type": "boolean",
                "description": "An earlier request with this Idempotency-Key queued the job.",
            },
            "decision": {"$ref": "#/components/schemas/Decision"},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "What Slurm said alongside success.",
            },
            "job": {"$ref": "#/components/schemas/Job"},
            "final_job": {"$ref": "#/components/schemas/FinalJob"},
            "directives": {
                "type": "array",
                "items": _object(
                    {
                        "line": _integer("Line in the script."),
                        "option": _string("Long option name."),
                        "value": _string("Its value."),
                    }
                ),
                "description": "The #SBATCH directives found.",
            },
            "cost": _object(
                {
                    "gpu_hours": {"type": "number", "description": "GPUs times the time limit."},
                    "cpu_hours": {"type": "number", "description": "CPUs times the time limit."},
                }
            ),
        },
        required=["dry_run", "replayed", "decision", "warnings"],
    ),
}


def document(request: HttpRequest | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of /v1, built from ROUTES."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        item: dict[str, Any] = {}
        if route.path_parameters:
            item["parameters"] = [dict(p) for p in route.path_parameters]
        for method, op in route.operations.items():
            operation: dict[str, Any] = {
                "operationId": op.operation_id,
                "summary": op.summary,
                "tags": list(op.tags),
                "responses": json.loads(json.dumps(op.responses)),
            }
            if op.description:
                operation["description"] = op.description
            if op.parameters:
                operation["parameters"] = [dict(p) for p in op.parameters]
            if op.request_body:
                operation["requestBody"] = op.request_body
            if op.public:
                operation["security"] = []
            item[method] = operation
        paths[route.openapi_path] = item
    server = "/v1" if request is None else request.build_absolute_uri("/v1")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clusterra API",
            "version": API_VERSION,
            "summary": "Submit, watch and cancel Slurm jobs as yourself.",
            "description": (
                "Authenticate with a personal API token: `Authorization: Bearer <token>` (make one on the "
                "console's API tokens page, or with `clusterra login`). Errors are "
                '`{"error": {"code", "message"}}`; a policy denial is 403 with the decision\'s sentence. '
                "`{id}` is the cluster's slug."
            ),
        },
        "servers": [{"url": server}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "people", "description": "You."},
            {"name": "clusters", "description": "Clusters, partitions and quotas."},
            {"name": "jobs", "description": "Submit, list, show, cancel, output."},
            {"name": "documentation", "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A personal API token (ct_…)."}
            },
            "schemas": SCHEMAS,
        },
    }


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document flattened for the docs page: one entry per method and path."""
    result = []
    for route_path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in ("get", "post", "delete"):
            op = item.get(method)
            if op is None:
                continue
            body_ref = ""
            if "requestBody" in op:
                body_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[
                    -1
                ]
            result.append(
                {
                    "method": method.upper(),
                    "path": "/v1" + route_path,
                    "op": op,
                    "parameters": shared + op.get("parameters", []),
                    "body": body_ref,
                    "responses": [
                        (code, r["description"], _schema_name(r))
                        for code, r in sorted(op["responses"].items())
                    ],
                }
            )
    return result


def _schema_name(response: dict[str, Any]) -> str:
    for content in response.get("content", {}).values():
        ref = content.get("schema", {}).get("$ref", "")
        if ref:
            return ref.rsplit("/", 1)[-1]
    return ""


def schema_rows(name: str) -> list[tuple[str, str, bool, str]]:
    """(field, type, required, description) of one component schema, for the docs page."""
    schema = SCHEMAS[name]
    required = set(schema.get("required", []))
    rows = []
    for prop, spec in schema.get("properties", {}).items():
        rows.append((prop, _type_words(spec), prop in required, spec.get("description", "")))
    return rows


def _type_words(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "oneOf" in spec:
        return " or ".join(_type_words(s) for s in spec["oneOf"])
    kind = spec.get("type", "object")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        return f"array of {_type_words(spec.get('items', {}))}"
    return kind
