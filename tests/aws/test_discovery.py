"""Registering a cluster found on AWS: PCS (answers shaped by its service model), ParallelCluster (moto)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from django.core.management import CommandError, call_command
from moto import mock_aws

from clusters import discovery
from clusters.models import Cluster

REGION = "eu-west-1"
ACCOUNT = "111122223333"
CLUSTER_ID = "pcs_a1b2c3d4e5"
LOGIN_GROUP = "pcs_l0g1n2g3r4"
COMPUTE_GROUP = "pcs_c0mpu7e5g6"
JWT_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:pcs!slurmrestd-jwt-key-{CLUSTER_ID}-AbCdEf"
WHEN = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def aws():
    with mock_aws():
        yield


def _pcs_cluster(**changes: Any) -> dict:
    """GetCluster's answer as the PCS API reference documents it (Stubber checks it against the model)."""
    cluster = {
        "name": "research",
        "id": CLUSTER_ID,
        "arn": f"arn:aws:pcs:{REGION}:{ACCOUNT}:cluster/{CLUSTER_ID}",
        "status": "ACTIVE",
        "createdAt": WHEN,
        "modifiedAt": WHEN,
        "scheduler": {"type": "SLURM", "version": "24.11"},
        "size": "SMALL",
        "slurmConfiguration": {
            "scaleDownIdleTimeInSeconds": 600,
            "slurmCustomSettings": [],
            "authKey": {
                "secretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:pcs!munge",
                "secretVersion": "1",
            },
            "jwtAuth": {"jwtKey": {"secretArn": JWT_SECRET, "secretVersion": "1"}},
            "accounting": {"mode": "STANDARD", "defaultPurgeTimeInDays": -1},
            "slurmRest": {"mode": "STANDARD"},
        },
        "networking": {
            "subnetIds": ["subnet-0123456789abcdef0"],
            "securityGroupIds": ["sg-0123456789abcdef0"],
        },
        "endpoints": [
            {"type": "SLURMCTLD", "privateIpAddress": "10.3.149.220", "port": "6817"},
            {"type": "SLURMDBD", "privateIpAddress": "10.3.149.220", "port": "6819"},
            {"type": "SLURMRESTD", "privateIpAddress": "10.3.149.220", "port": "6820"},
        ],
    }
    cluster.update(changes)
    return {"cluster": cluster}


def _groups(*names_and_ids: tuple[str, str]) -> dict:
    return {
        "computeNodeGroups": [
            {
                "name": name,
                "id": group_id,
                "arn": f"arn:aws:pcs:{REGION}:{ACCOUNT}:cluster/{CLUSTER_ID}/computenodegroup/{group_id}",
                "clusterId": CLUSTER_ID,
                "createdAt": WHEN,
                "modifiedAt": WHEN,
                "status": "ACTIVE",
            }
            for name, group_id in names_and_ids
        ]
    }


def _pcs(*answers: tuple[str, dict, dict]) -> tuple[Any, Stubber]:
    client = boto3.client(
        "pcs", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    stubber = Stubber(client)
    for method, answer, expected in answers:
        stubber.add_response(method, answer, expected)
    stubber.activate()
    return client, stubber


def _instance(tags: dict[str, str]) -> str:
    """A running EC2 instance (moto) with these tags; its id."""
    ec2 = boto3.client("ec2", region_name=REGION)
    made = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )
    return made["Instances"][0]["InstanceId"]


def _login_node(group: str = LOGIN_GROUP, cluster: str = CLUSTER_ID) -> str:
    return _instance({"aws:pcs:cluster-id": cluster, "aws:pcs:compute-node-group-id": group})


GET = ("get_cluster", _pcs_cluster(), {"clusterIdentifier": CLUSTER_ID})
LIST = (
    "list_compute_node_groups",
    _groups(("login", LOGIN_GROUP), ("compute-1", COMPUTE_GROUP)),
    {"clusterIdentifier": CLUSTER_ID},
)


def test_it_finds_the_pcs_endpoint_key_and_login_node(aws) -> None:
    login = _login_node()
    _login_node(COMPUTE_GROUP)  # a compute node is no head node
    _login_node(LOGIN_GROUP, cluster="pcs_0therc1uster")  # nor another cluster's login node
    pcs, stubber = _pcs(GET, LIST)
    found = discovery.from_pcs(
        CLUSTER_ID, region=REGION, pcs=pcs, ec2=boto3.client("ec2", region_name=REGION)
    )
    stubber.assert_no_pending_responses()
    assert found.slurmrestd_url == "http://10.3.149.220:6820"
    assert found.ssm_instance_id == login
    assert found.jwt_secret_arn == JWT_SECRET
    assert found.cluster_fields() == {
        "transport": "ssm",
        "slurmrestd_url": "http://10.3.149.220:6820",
        "ssm_instance_id": login,
        "aws_region": REGION,
        "jwt_key_source": "aws_secret",
        "jwt_key_ref": JWT_SECRET,
        "jwt_include_ids": True,
    }


@pytest.mark.django_db
def test_register_cluster_from_pcs_registers_what_it_found(aws, monkeypatch) -> None:
    login = _login_node()
    pcs, _ = _pcs(GET, LIST)
    clients = {"pcs": pcs, "ec2": boto3.client("ec2", region_name=REGION)}
    monkeypatch.setattr(discovery, "_client", lambda service, region: clients[service])
    call_command(
        "register_cluster", "research", "--from-pcs", CLUSTER_ID, "--aws-region", REGION, "--no-check"
    )
    cluster = Cluster.objects.get(slug="research")
    assert (cluster.transport, cluster.ssm_instance_id, cluster.aws_region) == ("ssm", login, REGION)
    assert cluster.slurmrestd_url == "http://10.3.149.220:6820"
    assert (cluster.jwt_key_source, cluster.jwt_key_ref, cluster.jwt_include_ids) == (
        "aws_secret",
        JWT_SECRET,
        True,
    )


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (_pcs_cluster(status="CREATING"), "is CREATING; register it once it is ACTIVE"),
        (
            _pcs_cluster(
                endpoints=[{"type": "SLURMCTLD", "privateIpAddress": "10.3.149.220", "port": "6817"}]
            ),
            "has no Slurm REST API endpoint",
        ),
    ],
    ids=["not-active", "no-slurmrestd"],
)
def test_a_pcs_cluster_not_ready_is_refused(aws, answer: dict, error: str) -> None:
    pcs, _ = _pcs(("get_cluster", answer, {"clusterIdentifier": CLUSTER_ID}))
    with pytest.raises(discovery.DiscoveryError, match=error):
        discovery.from_pcs(CLUSTER_ID, region=REGION, pcs=pcs, ec2=boto3.client("ec2", region_name=REGION))


@pytest.mark.django_db
def test_an_unknown_pcs_cluster_registers_nothing(aws, monkeypatch) -> None:
    pcs = boto3.client(
        "pcs", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    stubber = Stubber(pcs)
    # The error's members as the model declares them for ResourceNotFoundException.
    stubber.add_client_error(
        "get_cluster",
        service_error_code="ResourceNotFoundException",
        service_message="Cluster pcs_n0suchc1u not found",
        http_status_code=404,
        modeled_fields={
            "message": "Cluster pcs_n0suchc1u not found",
            "resourceId": "pcs_n0suchc1u",
            "resourceType": "cluster",
        },
        expected_params={"clusterIdentifier": "pcs_n0suchc1u"},
    )
    stubber.activate()
    monkeypatch.setattr(discovery, "_client", lambda service, region: pcs if service == "pcs" else None)
    with pytest.raises(CommandError, match=r"There is no AWS PCS cluster 'pcs_n0suchc1u' in eu-west-1\."):
        call_command(
            "register_cluster", "x", "--from-pcs", "pcs_n0suchc1u", "--aws-region", REGION, "--no-check"
        )
    assert not Cluster.objects.exists()


def test_the_login_group_must_be_clear(aws) -> None:
    _login_node(COMPUTE_GROUP)
    ec2 = boto3.client("ec2", region_name=REGION)
    only_compute = (
        "list_compute_node_groups",
        _groups(("compute-1", COMPUTE_GROUP)),
        {"clusterIdentifier": CLUSTER_ID},
    )
    pcs, _ = _pcs(GET, only_compute)
    with pytest.raises(
        discovery.DiscoveryError,
        match=r"no compute node group named like a login group \(it has: compute-1\)",
    ):
        discovery.from_pcs(CLUSTER_ID, region=REGION, pcs=pcs, ec2=ec2)
    # Named, any group will do (here the compute group stands in for a login group).
    pcs, _ = _pcs(GET, only_compute)
    found = discovery.from_pcs(CLUSTER_ID, region=REGION, login_group="compute-1", pcs=pcs, ec2=ec2)
    assert found.source.endswith("login node group compute-1")
    pcs, _ = _pcs(GET, only_compute)
    with pytest.raises(discovery.DiscoveryError, match=r"has no compute node group 'gpu'"):
        discovery.from_pcs(CLUSTER_ID, region=REGION, login_group="gpu", pcs=pcs, ec2=ec2)


def test_a_login_group_needs_exactly_one_running_node(aws) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    pcs, _ = _pcs(GET, LIST)
    with pytest.raises(
        discovery.DiscoveryError, match="There is no running instance in the login node group login"
    ):
        discovery.from_pcs(CLUSTER_ID, region=REGION, pcs=pcs, ec2=ec2)
    first, second = _login_node(), _login_node()
    pcs, _ = _pcs(GET, LIST)
    with pytest.raises(
        discovery.DiscoveryError, match=r"There are 2 running instances .* give --ssm-instance-id"
    ):
        discovery.from_pcs(CLUSTER_ID, region=REGION, pcs=pcs, ec2=ec2)
    pcs, _ = _pcs(GET, LIST)
    assert (
        discovery.from_pcs(CLUSTER_ID, region=REGION, instance_id=second, pcs=pcs, ec2=ec2).ssm_instance_id
        == second
    )
    ec2.stop_instances(InstanceIds=[first])
    pcs, _ = _pcs(GET, LIST)
    assert discovery.from_pcs(CLUSTER_ID, region=REGION, pcs=pcs, ec2=ec2).ssm_instance_id == second


# --- ParallelCluster: describe_stacks and describe_instances as moto implements them -------------------


def _parallelcluster_stack(name: str) -> None:
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"Name": {"Value": name}},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Tags=[{"Key": "parallelcluster:version", "Value": "3.13.0"}],
    )


def _pc_node(cluster: str, node_type: str) -> str:
    return _instance({"parallelcluster:cluster-name": cluster, "parallelcluster:node-type": node_type})


def test_it_finds_the_parallelcluster_head_node(aws) -> None:
    _parallelcluster_stack("genomics")
    head = _pc_node("genomics", "HeadNode")
    _pc_node("genomics", "Compute")
    _pc_node("other", "HeadNode")
    found = discovery.from_parallelcluster("genomics", region=REGION)
    address = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[head])["Reservations"][
        0
    ]["Instances"][0]["PrivateIpAddress"]
    assert found.ssm_instance_id == head
    assert found.slurmrestd_url == f"http://{address}:6820"
    assert found.slurm_bin == "/opt/slurm/bin"
    assert found.source == f"ParallelCluster 3.13.0 genomics, head node {head}"
    assert not found.jwt_secret_arn


@pytest.mark.django_db
def test_register_cluster_from_parallelcluster(aws) -> None:
    _parallelcluster_stack("genomics")
    head = _pc_node("genomics", "HeadNode")
    with pytest.raises(CommandError, match="Give exactly one of --key-file, --key-env or --key-secret"):
        call_command(
            "register_cluster",
            "genomics",
            "--from-parallelcluster",
            "genomics",
            "--aws-region",
            REGION,
            "--no-check",
        )
    assert not Cluster.objects.exists()
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:clusterra-SlurmJwtKey-AbCdEf"
    call_command(
        "register_cluster", "genomics", "--from-parallelcluster", "genomics", "--aws-region", REGION,
        "--key-secret", secret, "--url", "https://slurmrestd.internal:6820", "--no-check",
    )  # fmt: skip
    cluster = Cluster.objects.get(slug="genomics")
    assert (cluster.transport, cluster.ssm_instance_id, cluster.aws_region) == ("ssm", head, REGION)
    assert cluster.slurmrestd_url == "https://slurmrestd.internal:6820"  # given wins over found
    assert (cluster.slurm_bin, cluster.jwt_key_source, cluster.jwt_key_ref) == (
        "/opt/slurm/bin",
        "aws_secret",
        secret,
    )


@pytest.mark.django_db
def test_parallelcluster_errors_are_sentences_and_register_nothing(aws) -> None:
    def register(name: str) -> None:
        call_command(
            "register_cluster", "pc", "--from-parallelcluster", name, "--aws-region", REGION,
            "--key-secret", "slurm-jwt", "--no-check",
        )  # fmt: skip

    with pytest.raises(CommandError, match=r"There is no ParallelCluster stack 'nosuch' in eu-west-1\."):
        register("nosuch")
    _parallelcluster_stack("empty")
    with pytest.raises(
        CommandError, match="There is no running head node in the ParallelCluster cluster empty"
    ):
        register("empty")
    _parallelcluster_stack("twice")
    first, second = _pc_node("twice", "HeadNode"), _pc_node("twice", "HeadNode")
    with pytest.raises(CommandError, match=rf"There are 2 running head nodes .*\({min(first, second)}, "):
        register("twice")
    assert not Cluster.objects.exists()
    with pytest.raises(CommandError, match="is not a running head node"):
        call_command(
            "register_cluster", "pc", "--from-parallelcluster", "twice", "--aws-region", REGION,
            "--key-secret", "slurm-jwt", "--ssm-instance-id", "i-0000000000000000f", "--no-check",
        )  # fmt: skip
    assert not Cluster.objects.exists()
