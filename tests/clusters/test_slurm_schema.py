"""The adapters against the real OpenAPI documents: bodies validate, answers built from the schemas parse."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from clusters.slurm import (
    JobSpec,
    SlurmClient,
    SlurmPermissionDenied,
    forget_api_version,
)
from clusters.slurm.client import versions_in_document
from clusters.slurm.http import close_sessions
from clusters.slurm.v0038 import V0038Adapter
from clusters.slurm.v0040 import V0040Adapter
from tests.support.fake_slurmrestd import TOKEN, FakeSlurmrestd

SPECS = Path(__file__).resolve().parents[2].parent / "shared" / "slurm-openapi"
pytestmark = pytest.mark.skipif(
    not SPECS.is_dir(), reason=f"{SPECS} is absent: no OpenAPI documents to check against"
)

DOCUMENTS = {
    "v0.0.38": "slurmrestd-v0.0.38-with-dbv0.0.38.served-by-22.05.8.json",
    "v0.0.40": "slurmrestd-v0.0.40-as-served-by-24.05.json",
    "v0.0.41": "slurmrestd-v0.0.41.json",
    "v0.0.42": "slurmrestd-v0.0.42.json",
    "v0.0.43": "slurmrestd-v0.0.43.json",
    "v0.0.44": "slurmrestd-v0.0.44.json",
    "v0.0.45": "slurmrestd-v0.0.45.json",
}
FAMILY = [v for v in DOCUMENTS if v != "v0.0.38"]
DOC_URI = "urn:slurm-openapi"

FULL_SPEC = JobSpec(
    script="#!/bin/bash\nsrun hostname\n",
    working_directory="/home/alice/run",
    environment={"OMP_NUM_THREADS": "2", "PATH": "/opt/bin:/usr/bin:/bin"},
    name="every-field",
    partition="gpu",
    time_limit=90,
    nodes=2,
    ntasks=4,
    cpus_per_task=2,
    gpus="a100:4",
    memory_per_node=4096,
    standard_output="/home/alice/run/%j.out",
    standard_error="/home/alice/run/%j.err",
    account="physics",
    qos="normal",
    array="0-9%2",
    get_user_environment=True,
    requeue=False,
    # Every other sbatch option the console carries, so each key is checked against each document.
    time_min=30,
    max_nodes=4,
    tasks_per_node=2,
    tasks_per_socket=1,
    tasks_per_core=1,
    tasks_per_gpu=1,
    cpus_per_gpu=2,
    min_cpus_per_node=2,
    sockets_per_node=2,
    threads_per_core=1,
    gpus_per_node="2",
    gpus_per_task="1",
    gpus_per_socket="1",
    gres="gpu:1",
    memory_per_cpu=1024,
    memory_per_gpu=8192,
    tmp_disk_per_node=1024,
    exclusive="user",
    constraint="a100&ib",
    prefer="fast",
    nodelist="gpu[01-02]",
    exclude="gpu07",
    dependency="afterok:12",
    kill_on_invalid_dependency=True,
    begin="now+1hour",
    deadline="2030-01-01T08:00",
    signal="USR1@60",
    mail_type="END,FAIL,TIME_LIMIT_90",
    mail_user="alice@example.org",
    open_mode="append",
    standard_input="/dev/null",
    reservation="maint",
    licenses="matlab:1",
    wckey="proj",
    nice=10,
    distribution="block",
    spread_job=True,
    hold=True,
    comment="sweep 3",
    tag="clusterra:0123",
)
MINIMAL_SPEC = JobSpec(script="#!/bin/sh\ntrue\n", working_directory="/tmp")


@cache
def document(version: str) -> dict[str, Any]:
    return json.loads((SPECS / DOCUMENTS[version]).read_text())


@cache
def registry(version: str) -> Registry:
    return Registry().with_resource(DOC_URI, Resource.from_contents(document(version), DRAFT4))


def validator(version: str, schema: dict[str, Any]) -> OAS30Validator:
    root = {"$ref": DOC_URI + schema["$ref"]} if "$ref" in schema else schema
    return OAS30Validator(root, registry=registry(version))


def operation(version: str, method: str, name: str) -> dict[str, Any]:
    """The operation at /slurm/<version>/<name>, with or without the trailing slash newer documents use."""
    paths = document(version)["paths"]
    for path, item in paths.items():
        if path.rstrip("/") == f"/slurm/{version}/{name}" and method in item:
            return item[method]
    raise LookupError(f"{method.upper()} /slurm/{version}/{name} is not in the document")


def request_schema(version: str) -> dict[str, Any]:
    return operation(version, "post", "job/submit")["requestBody"]["content"]["application/json"]["schema"]


def response_schema(version: str, method: str, name: str) -> dict[str, Any]:
    return operation(version, method, name)["responses"]["200"]["content"]["application/json"]["schema"]


def resolve(version: str, schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document(version)
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def undeclared_keys(version: str, value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Keys a body sends that its schema does not declare (the documents allow extras; Slurm may not)."""
    schema = resolve(version, schema)
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{where}/{key}")
            else:
                found += undeclared_keys(version, item, schema["properties"][key], f"{where}/{key}")
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            found += undeclared_keys(version, item, schema["items"], f"{where}[]")
    return found


def int_at(*path: str) -> int:
    """The integer the generator puts at a path: stable and different from field to field."""
    return 1 + zlib.crc32("/".join(path).encode()) % 9000


def str_at(*path: str) -> str:
    return "/".join(path)


class Generator:
    """Builds one instance of a schema with a plausible value in every property.

    Strings are their own path and integers a hash of it, so a test can tell which
    field of the answer ended up in which field of the dataclass. `noval` picks how
    `{set, infinite, number}` objects are filled: "set", "unset" or "infinite".
    """

    def __init__(self, version: str, noval: str = "set") -> None:
        self.version = version
        self.noval = noval

    def of(self, schema: dict[str, Any], path: tuple[str, ...] = (), refs: tuple[str, ...] = ()) -> Any:
        if "$ref" in schema:
            if schema["$ref"] in refs or len(refs) > 12:
                return None
            return self.of(resolve(self.version, schema), path, (*refs, schema["$ref"]))
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        properties = schema.get("properties")
        if kind == "object" or properties is not None:
            properties = properties or {}
            if set(properties) == {"set", "infinite", "number"}:
                return self.no_val(path, resolve(self.version, properties["number"]))
            return {key: self.of(sub, (*path, key), refs) for key, sub in properties.items()}
        if kind == "array":
            return [self.of(schema.get("items", {}), path, refs)]
        if kind == "string":
            return str_at(*path)
        if kind == "integer":
            return int_at(*path)
        if kind == "number":
            return int_at(*path) + 0.5
        if kind == "boolean":
            return True
        return None

    def no_val(self, path: tuple[str, ...], number_schema: dict[str, Any]) -> dict[str, Any]:
        if self.noval == "unset":
            return {"set": False, "infinite": False, "number": 0}
        if self.noval == "infinite":
            return {"set": False, "infinite": True, "number": 0}
        number = int_at(*path, "number")
        return {
            "set": True,
            "infinite": False,
            "number": number + 0.5 if number_schema.get("type") == "number" else number,
        }


def answer(version: str, method: str, name: str, noval: str = "set") -> dict[str, Any]:
    """A 200 body generated from the schema; `errors` emptied, because errors on 200 mean failure here."""
    schema = response_schema(version, method, name)
    body = Generator(version, noval).of(schema)
    assert not schema_errors(version, schema, body), "the generator produced an invalid instance"
    body["errors"] = []
    return body


def schema_errors(version: str, schema: dict[str, Any], value: Any) -> list[str]:
    errors = []
    for error in validator(version, schema).iter_errors(value):
        # Some generated schemas require "error/string"-style names that no server sends.
        if error.validator == "required" and "/" in error.message:
            continue
        errors.append(f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}")
    return errors


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSlurmrestd]:
    fake = FakeSlurmrestd()
    yield fake
    close_sessions()
    fake.close()


@pytest.fixture
def fake(server: FakeSlurmrestd) -> FakeSlurmrestd:
    server.routes.clear()
    server.seen.clear()
    forget_api_version()
    return server


def client(fake: FakeSlurmrestd, version: str) -> SlurmClient:
    return SlurmClient(fake.url, user_name="alice", token=TOKEN, api_version=version)


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


# --- (a) request bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("version", FAMILY)
@pytest.mark.parametrize("spec", [FULL_SPEC, MINIMAL_SPEC], ids=["every-field", "minimal"])
def test_the_submit_body_validates(version, spec):
    adapter = V0040Adapter("http://127.0.0.1:1", user_name="alice", token=TOKEN, version=version)
    body = adapter.submit_body(spec)
    schema = request_schema(version)
    assert schema_errors(version, schema, body) == []
    assert undeclared_keys(version, body, schema) == []


def test_the_v0038_body_validates_except_where_the_document_is_wrong():
    adapter = V0038Adapter("http://127.0.0.1:1", user_name="alice", token=TOKEN, version="v0.0.38")
    schema = request_schema("v0.0.38")
    body = adapter.submit_body(FULL_SPEC)
    # Keys 22.05.8's parser reads (sbatch's own option names) that the document does not list, each seen
    # working there; and 22.05 turns requeue on for `requeue: false`, only `no_requeue` turns it off.
    assert undeclared_keys("v0.0.38", body, schema) == [
        "/job/ntasks_per_gpu",
        "/job/temporary_disk_per_node",
        "/job/nodelist",
        "/job/exclude_nodes",
        "/job/no_requeue",
    ]
    # Where the document and 22.05 disagree, 22.05 wins: it refuses a boolean get_user_environment and an
    # integer begin_time ("Unable to parse time"), ignores a [min, max] node list, and takes sbatch's
    # strings for all three (SOURCES.md).
    assert schema_errors("v0.0.38", schema, body) == [
        "job/begin_time: 'now+1hour' is not of type 'integer'",
        "job/get_user_environment: '1' is not of type 'boolean'",
        "job/nodes: '2-4' is not of type 'array'",
        "job/signal: 'USR1@60' does not match '(B:|)sig_num(@sig_time|)'",
    ]
    plain = adapter.submit_body(
        JobSpec(
            **{
                **FULL_SPEC.__dict__,
                "get_user_environment": False,
                "begin": None,
                "signal": None,
                "nodes": None,
                "max_nodes": None,
            }
        )
    )
    assert schema_errors("v0.0.38", schema, plain) == []
    assert schema_errors("v0.0.38", schema, adapter.submit_body(MINIMAL_SPEC)) == []


@pytest.mark.parametrize("version", DOCUMENTS)
def test_detection_reads_the_versions_from_each_document(version):
    offered = versions_in_document(document(version))
    assert version in offered


# --- (b) answers generated from the schemas -----------------------------------------------------


@pytest.mark.parametrize("version", FAMILY)
def test_jobs_parse(fake, version):
    body = answer(version, "get", "jobs")
    raw = body["jobs"][0]
    raw["job_state"] = ["FAILED", "COMPLETING"]
    raw["exit_code"]["status"] = ["ERROR"]
    fake.reply("GET", f"/slurm/{version}/jobs", body=body)
    listing = client(fake, version).jobs()
    (job,) = listing.jobs
    assert job.job_id == int_at("jobs", "job_id")
    assert (job.name, job.user_name, job.account) == ("jobs/name", "jobs/user_name", "jobs/account")
    assert (job.partition, job.qos, job.nodes) == ("jobs/partition", "jobs/qos", "jobs/nodes")
    assert (job.state, job.state_flags) == ("FAILED", ("COMPLETING",))
    assert job.exit_code == int_at("jobs", "exit_code", "return_code", "number")
    assert job.exit_signal is None
    assert job.cpus == int_at("jobs", "cpus", "number")
    assert job.node_count == int_at("jobs", "node_count", "number")
    assert job.time_limit == int_at("jobs", "time_limit", "number")
    assert job.submit_time == at(int_at("jobs", "submit_time", "number"))
    assert job.end_time == at(int_at("jobs", "end_time", "number"))
    assert job.memory_mb == int_at("jobs", "memory_per_node", "number")
    assert job.array_job_id == int_at("jobs", "array_job_id", "number")
    assert job.array_task_id == int_at("jobs", "array_task_id", "number")
    assert job.working_directory == "jobs/current_working_directory"
    assert job.tres_requested == "jobs/tres_req_str"
    assert listing.last_update == int_at("last_update", "number")
    assert not listing.not_modified


@pytest.mark.parametrize("version", FAMILY)
@pytest.mark.parametrize("noval", ["unset", "infinite"])
def test_jobs_parse_with_unset_and_infinite_numbers(fake, version, noval):
    body = answer(version, "get", "jobs", noval)
    fake.reply("GET", f"/slurm/{version}/jobs", body=body)
    (job,) = client(fake, version).jobs().jobs
    assert (job.cpus, job.node_count, job.time_limit, job.memory_mb) == (None, None, None, None)
    assert (job.submit_time, job.start_time, job.end_time) == (None, None, None)
    assert (job.array_job_id, job.array_task_id, job.exit_code) == (None, None, None)


@pytest.mark.parametrize("version", FAMILY)
def test_one_job_parses(fake, version):
    body = answer(version, "get", "job/{job_id}")
    body["jobs"][0]["tres_alloc_str"] = "cpu=8,mem=16G,node=2,billing=8,gres/gpu=4"
    job_id = int_at("jobs", "job_id")
    fake.reply("GET", f"/slurm/{version}/job/{job_id}", body=body)
    job = client(fake, version).job(job_id)
    assert (job.job_id, job.gpus, job.tres_allocated) == (
        job_id,
        4,
        "cpu=8,mem=16G,node=2,billing=8,gres/gpu=4",
    )
    assert job.state == "PENDING"
    assert (job.exit_code, job.exit_signal) == (None, None)


@pytest.mark.parametrize("version", FAMILY)
def test_partitions_parse(fake, version):
    body = answer(version, "get", "partitions")
    body["partitions"][0]["tres"]["configured"] = "cpu=64,mem=256G,node=2,billing=64,gres/gpu=8"
    fake.reply("GET", f"/slurm/{version}/partitions", body=body)
    (partition,) = client(fake, version).partitions()
    assert (partition.name, partition.state, partition.gpus) == ("partitions/name", "INACTIVE", 8)
    assert partition.max_time_limit == int_at("partitions", "maximums", "time", "number")
    assert partition.default_time_limit == int_at("partitions", "defaults", "time", "number")
    assert partition.max_nodes_per_job == int_at("partitions", "maximums", "nodes", "number")
    assert partition.total_nodes == int_at("partitions", "nodes", "total")
    assert partition.total_cpus == int_at("partitions", "cpus", "total")
    assert partition.nodes == "partitions/nodes/configured"
    # Only v0.0.45 lists partition flags (the generator picks the first, DEFAULT).
    assert partition.is_default is (True if version == "v0.0.45" else None)


@pytest.mark.parametrize("version", FAMILY)
def test_nodes_parse(fake, version):
    body = answer(version, "get", "nodes")
    body["nodes"][0].update(state=["MIXED", "DRAIN"], gres="gpu:a100:4(S:0-1)", gres_used="gpu:a100:1(IDX:0)")
    fake.reply("GET", f"/slurm/{version}/nodes", body=body)
    (node,) = client(fake, version).nodes()
    assert (node.name, node.state, node.state_flags) == ("nodes/name", "MIXED", ("DRAIN",))
    assert (node.cpus, node.alloc_cpus) == (int_at("nodes", "cpus"), int_at("nodes", "alloc_cpus"))
    assert node.idle_cpus == int_at("nodes", "alloc_idle_cpus")
    assert (node.real_memory, node.alloc_memory) == (
        int_at("nodes", "real_memory"),
        int_at("nodes", "alloc_memory"),
    )
    assert (node.gpus, node.gpus_used) == (4, 1)
    assert (node.partitions, node.reason) == (("nodes/partitions",), "nodes/reason")


@pytest.mark.parametrize("version", FAMILY)
def test_ping_parses(fake, version):
    body = answer(version, "get", "ping")
    if "pinged" in body["pings"][0]:
        body["pings"][0]["pinged"] = "UP"
    fake.reply("GET", f"/slurm/{version}/ping", body=body)
    info = client(fake, version).info()
    assert (info.api_version, info.slurm_release, info.cluster_name) == (
        version,
        "meta/slurm/release",
        "meta/slurm/cluster",
    )
    (controller,) = info.controllers
    assert (controller.hostname, controller.state) == ("pings/hostname", "UP")
    # v0.0.42+ says `primary` outright; before, only `mode` ("primary"/"backup") did.
    assert controller.primary is (version >= "v0.0.42")


@pytest.mark.parametrize("version", FAMILY)
def test_submit_answer_parses(fake, version):
    body = answer(version, "post", "job/submit")
    fake.reply("POST", f"/slurm/{version}/job/submit", body=body)
    result = client(fake, version).submit(FULL_SPEC)
    assert result.job_id == int_at("job_id")
    assert result.user_message == "job_submit_user_msg"
    expected = ["warnings/description"]
    if version in ("v0.0.40", "v0.0.41"):
        # The deprecated `result` carries its own error text, kept as one more warning.
        expected.append("result/error")
    assert list(result.warnings) == expected
    sent = fake.seen[-1].json()
    assert sent["job"]["script"] == FULL_SPEC.script


@pytest.mark.parametrize("version", FAMILY)
def test_cancel_answer_parses(fake, version):
    body = answer(version, "delete", "job/{job_id}")
    path = f"/slurm/{version}/job/42"
    if "status" in body:
        body["status"][0]["error"]["code"] = 0
    fake.reply("DELETE", path, body=body)
    client(fake, version).cancel(42, signal="TERM")
    assert fake.seen[-1].query == {"signal": ["TERM"]}
    if "status" in body:
        body["status"][0]["error"].update(code=2002, string="Access/permission denied")
        fake.reply("DELETE", path, body=body)
        with pytest.raises(SlurmPermissionDenied, match="Access/permission denied"):
            client(fake, version).cancel(42)


def test_v0038_answers_generated_from_the_served_document_parse(fake):
    version = "v0.0.38"
    for name in ("jobs", "partitions", "nodes", "ping"):
        body = answer(version, "get", name)
        fake.reply("GET", f"/slurm/{version}/{name}", body=body)
    body = answer(version, "post", "job/submit")
    fake.reply("POST", f"/slurm/{version}/job/submit", body=body)
    c = client(fake, version)
    (job,) = c.jobs().jobs
    assert (job.job_id, job.name, job.cpus, job.state) == (
        int_at("jobs", "job_id"),
        "jobs/name",
        int_at("jobs", "cpus"),
        "jobs/job_state",
    )
    (partition,) = c.partitions()
    assert (partition.name, partition.total_cpus) == ("partitions/name", int_at("partitions", "total_cpus"))
    assert partition.max_time_limit == int_at("partitions", "max_time_limit")
    (node,) = c.nodes()
    assert (node.name, node.cpus, node.idle_cpus) == (
        "nodes/name",
        int_at("nodes", "cpus"),
        int_at("nodes", "idle_cpus"),
    )
    info = c.info()
    assert (info.slurm_release, info.controllers[0].hostname) == ("meta/Slurm/release", "pings/hostname")
    assert c.submit(MINIMAL_SPEC).job_id == int_at("job_id")
