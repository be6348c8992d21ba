"""What to register for a cluster on AWS, found from its AWS PCS cluster id or its ParallelCluster stack.

Nothing here writes anything: it asks AWS (with the caller's credentials, boto3's default chain) and
returns the registry fields, or raises DiscoveryError with a sentence saying what was looked for and
what to do. So a failed discovery registers nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

# AWS PCS tags the instances it launches with their cluster and compute node group.
PCS_CLUSTER_TAG = "aws:pcs:cluster-id"
PCS_GROUP_TAG = "aws:pcs:compute-node-group-id"
# ParallelCluster tags its instances with the cluster's name and the node's role.
PC_CLUSTER_TAG = "parallelcluster:cluster-name"
PC_NODE_TYPE_TAG = "parallelcluster:node-type"
PC_SLURM_BIN = "/opt/slurm/bin"
# ParallelCluster starts no slurmrestd itself: the console expects one on the head node, at its usual port.
PC_SLURMRESTD_PORT = 6820
# A stack in these states has its head node; any other is being made, changed, rolled back or removed.
STACK_READY = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"})


class DiscoveryError(Exception):
    """AWS did not show what a registration needs; the message says what is missing and what to do."""


@dataclass(frozen=True)
class Discovered:
    """The registry fields found on AWS, and where they came from (for the command's report)."""

    source: str
    aws_region: str
    slurmrestd_url: str
    ssm_instance_id: str
    slurm_bin: str = ""
    jwt_secret_arn: str = ""
    # AWS PCS's slurmrestd accepts only tokens that carry uid, gid and id claims.
    jwt_include_ids: bool = False

    def cluster_fields(self) -> dict[str, Any]:
        """Cluster model fields and values: the head node is reached through SSM."""
        fields: dict[str, Any] = {
            "transport": "ssm",
            "slurmrestd_url": self.slurmrestd_url,
            "ssm_instance_id": self.ssm_instance_id,
            "aws_region": self.aws_region,
        }
        if self.slurm_bin:
            fields["slurm_bin"] = self.slurm_bin
        if self.jwt_secret_arn:
            fields["jwt_key_source"] = "aws_secret"
            fields["jwt_key_ref"] = self.jwt_secret_arn
        if self.jwt_include_ids:
            fields["jwt_include_ids"] = True
        return fields


def from_pcs(
    cluster_id: str,
    *,
    region: str,
    login_group: str = "",
    instance_id: str = "",
    pcs: Any = None,
    ec2: Any = None,
) -> Discovered:
    """An AWS PCS cluster: its slurmrestd endpoint, its JWT key's secret, and its login node as the head node.

    PCS runs slurmctld itself; people's shells go to a login node, an instance of a compute node
    group. `login_group` names that group (name or id); without it, the one group whose name
    contains "login" is taken. `instance_id` picks one of its instances when it has several.
    """
    pcs = pcs or _client("pcs", region)
    ec2 = ec2 or _client("ec2", region)
    try:
        cluster = pcs.get_cluster(clusterIdentifier=cluster_id)["cluster"]
    except ClientError as e:
        code = _code(e)
        if code == "ResourceNotFoundException":
            raise DiscoveryError(f"There is no AWS PCS cluster {cluster_id!r} in {region}.") from None
        if code == "ValidationException":
            raise DiscoveryError(
                f"{cluster_id!r} is not an AWS PCS cluster id or name ({_message(e)})."
            ) from None
        raise DiscoveryError(_refused("AWS PCS", e)) from None
    except BotoCoreError as e:
        raise DiscoveryError(f"AWS PCS could not be reached in {region} ({e}).") from None
    name = cluster.get("name") or cluster_id
    if cluster.get("status") != "ACTIVE":
        raise DiscoveryError(
            f"The AWS PCS cluster {name} is {cluster.get('status', 'in an unknown state')}; "
            "register it once it is ACTIVE."
        )
    endpoints = [e for e in cluster.get("endpoints", []) if e.get("type") == "SLURMRESTD"]
    if not endpoints:
        raise DiscoveryError(
            f"The AWS PCS cluster {name} has no Slurm REST API endpoint: turn the Slurm REST API on "
            "(slurmConfiguration.slurmRest mode STANDARD), then register it."
        )
    # The console reaches slurmrestd from inside the VPC, on the private address.
    endpoint = endpoints[0]
    url = f"http://{endpoint['privateIpAddress']}:{endpoint['port']}"
    secret = cluster.get("slurmConfiguration", {}).get("jwtAuth", {}).get("jwtKey", {}).get("secretArn", "")

    group = _login_group(pcs, cluster, name, login_group)
    instances = _running_instances(
        ec2,
        region,
        {PCS_CLUSTER_TAG: cluster["id"], PCS_GROUP_TAG: group["id"]},
    )
    instance = _the_one(
        instances, f"the login node group {group['name']} of the AWS PCS cluster {name}", chosen=instance_id
    )
    return Discovered(
        source=f"AWS PCS cluster {name} ({cluster['id']}), login node group {group['name']}",
        aws_region=region,
        slurmrestd_url=url,
        ssm_instance_id=instance["InstanceId"],
        jwt_secret_arn=secret,
        jwt_include_ids=True,
    )


def from_parallelcluster(
    cluster_name: str,
    *,
    region: str,
    slurmrestd_port: int = PC_SLURMRESTD_PORT,
    instance_id: str = "",
    cloudformation: Any = None,
    ec2: Any = None,
) -> Discovered:
    """A ParallelCluster cluster (its stack bears the cluster's name): the head node and slurmrestd on it."""
    cloudformation = cloudformation or _client("cloudformation", region)
    ec2 = ec2 or _client("ec2", region)
    try:
        stacks = cloudformation.describe_stacks(StackName=cluster_name)["Stacks"]
    except ClientError as e:
        # CloudFormation answers an unknown stack with a ValidationError saying it "does not exist".
        if _code(e) == "ValidationError" and "does not exist" in _message(e):
            raise DiscoveryError(f"There is no ParallelCluster stack {cluster_name!r} in {region}.") from None
        raise DiscoveryError(_refused("AWS CloudFormation", e)) from None
    except BotoCoreError as e:
        raise DiscoveryError(f"AWS CloudFormation could not be reached in {region} ({e}).") from None
    stack = stacks[0]
    status = stack.get("StackStatus", "")
    if status not in STACK_READY:
        raise DiscoveryError(
            f"The ParallelCluster stack {cluster_name} is {status}; register it once it is CREATE_COMPLETE "
            "or UPDATE_COMPLETE."
        )
    instances = _running_instances(ec2, region, {PC_CLUSTER_TAG: cluster_name, PC_NODE_TYPE_TAG: "HeadNode"})
    head = _the_one(
        instances, f"the ParallelCluster cluster {cluster_name}", kind="head node", chosen=instance_id
    )
    address = head.get("PrivateIpAddress")
    if not address:
        raise DiscoveryError(f"The head node {head['InstanceId']} of {cluster_name} has no private address.")
    version = {t["Key"]: t["Value"] for t in stack.get("Tags", [])}.get("parallelcluster:version", "")
    return Discovered(
        source=f"ParallelCluster {version or 'cluster'} {cluster_name}, head node {head['InstanceId']}",
        aws_region=region,
        slurmrestd_url=f"http://{address}:{slurmrestd_port}",
        ssm_instance_id=head["InstanceId"],
        slurm_bin=PC_SLURM_BIN,
    )


def _login_group(pcs: Any, cluster: dict, name: str, wanted: str) -> dict:
    try:
        groups = [
            group
            for page in pcs.get_paginator("list_compute_node_groups").paginate(
                clusterIdentifier=cluster["id"]
            )
            for group in page["computeNodeGroups"]
        ]
    except ClientError as e:
        raise DiscoveryError(_refused("AWS PCS", e)) from None
    except BotoCoreError as e:
        raise DiscoveryError(f"AWS PCS could not be reached ({e}).") from None
    names = ", ".join(sorted(g["name"] for g in groups)) or "none"
    if wanted:
        chosen = [g for g in groups if wanted in (g["name"], g["id"])]
        if not chosen:
            raise DiscoveryError(
                f"The AWS PCS cluster {name} has no compute node group {wanted!r} (it has: {names})."
            )
        return chosen[0]
    chosen = [g for g in groups if "login" in g["name"].lower()]
    if len(chosen) != 1:
        found = "no compute node group" if not chosen else "several compute node groups"
        raise DiscoveryError(
            f"The AWS PCS cluster {name} has {found} named like a login group (it has: {names}); "
            "name the login node group (--pcs-login-group)."
        )
    return chosen[0]


def _running_instances(ec2: Any, region: str, tags: dict[str, str]) -> list[dict]:
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]
    filters.append({"Name": "instance-state-name", "Values": ["running"]})
    try:
        return [
            instance
            for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
        ]
    except ClientError as e:
        raise DiscoveryError(_refused("Amazon EC2", e)) from None
    except BotoCoreError as e:
        raise DiscoveryError(f"Amazon EC2 could not be reached in {region} ({e}).") from None


def _the_one(instances: list[dict], where: str, *, kind: str = "instance", chosen: str = "") -> dict:
    if not instances:
        raise DiscoveryError(f"There is no running {kind} in {where}; start it, then register the cluster.")
    if chosen:
        picked = [i for i in instances if i["InstanceId"] == chosen]
        if not picked:
            ids = ", ".join(sorted(i["InstanceId"] for i in instances))
            raise DiscoveryError(f"{chosen} is not a running {kind} of {where} (those are: {ids}).")
        return picked[0]
    if len(instances) > 1:
        ids = ", ".join(sorted(i["InstanceId"] for i in instances))
        raise DiscoveryError(
            f"There are {len(instances)} running {kind}s in {where} ({ids}); the console needs exactly one "
            "head node: give --ssm-instance-id."
        )
    return instances[0]


def _client(service: str, region: str) -> Any:
    # A fresh session: boto3's default one is not thread-safe.
    return boto3.session.Session().client(service, region_name=region)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", "")) or "error"


def _message(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Message", ""))


def _refused(service: str, e: ClientError) -> str:
    message = _message(e)
    return f"{service} refused ({_code(e)}{': ' + message if message else ''})."
