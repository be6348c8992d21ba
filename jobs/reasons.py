"""Slurm's job states and state reasons in plain words; Slurm's own word is always shown beside them."""

from __future__ import annotations

STATES = {
    "PENDING": "Waiting in the queue.",
    "RUNNING": "Running now.",
    "SUSPENDED": "Paused by Slurm or an administrator.",
    "COMPLETED": "Finished; the script exited with status 0.",
    "CANCELLED": "Cancelled, by you or an administrator.",
    "FAILED": "Finished with a non-zero exit status, or could not start.",
    "TIMEOUT": "Stopped because it reached its time limit.",
    "NODE_FAIL": "Stopped because a node it ran on failed.",
    "PREEMPTED": "Stopped to make room for a job with higher priority.",
    "BOOT_FAIL": "A node could not be booted for it.",
    "DEADLINE": "Its deadline passed before it could run.",
    "OUT_OF_MEMORY": "Stopped because it used more memory than it asked for.",
}

REASONS = {
    "None": "",
    "Priority": "Other jobs ahead of it in the queue have higher priority.",
    "Resources": "Waiting for enough free CPUs, GPUs, memory or nodes.",
    "Dependency": "Waiting for a job it depends on to finish.",
    "DependencyNeverSatisfied": "A job it depends on did not end the way it required; it will never start.",
    "BeginTime": "Waiting for the start time it asked for.",
    "JobHeldUser": "Held by you; release it to let it run.",
    "JobHeldAdmin": "Held by an administrator.",
    "PartitionTimeLimit": "It asks for more time than the partition allows; it will not start as it is.",
    "PartitionNodeLimit": "It asks for more nodes than the partition allows.",
    "PartitionDown": "The partition is down.",
    "PartitionInactive": "The partition does not accept jobs right now.",
    "ReqNodeNotAvail": "A node it needs is unavailable (down, drained or reserved).",
    "NodeDown": "A node it needs is down.",
    "BadConstraints": "No node matches what it asks for.",
    "InvalidAccount": "Its Slurm account is not valid.",
    "InvalidQOS": "Its QOS is not valid.",
    "QOSMaxJobsPerUserLimit": "You already have as many running jobs as the QOS allows.",
    "QOSMaxSubmitJobPerUserLimit": "You already have as many queued jobs as the QOS allows.",
    "QOSGrpCpuLimit": "The group's CPU limit for the QOS is in use.",
    "QOSResourceLimit": "A QOS resource limit is reached.",
    "AssocGrpCPUMinutesLimit": "The account's CPU-minute budget in Slurm is used up.",
    "AssocGrpGRESMinutes": "The account's GPU-minute budget in Slurm is used up.",
    "AssocMaxJobsLimit": "The account already runs as many jobs as it may.",
    "AssocGrpJobsLimit": "The account's group already runs as many jobs as it may.",
    "Reservation": "Waiting for its reservation to start.",
    "Licenses": "Waiting for licenses.",
    "launch failed requeued held": "Slurm could not start it and held it; cancel it and check the script.",
    "JobLaunchFailure": "Slurm could not start the job (often a missing output folder or script problem).",
    "NonZeroExitCode": "The script exited with a non-zero status.",
    "TimeLimit": "It reached its time limit.",
    "InactiveLimit": "It was inactive for too long.",
    "OutOfMemory": "It used more memory than it asked for.",
    "Prolog": "The node's prolog script is running.",
    "BurstBufferResources": "Waiting for burst buffer space.",
    "Cleaning": "Slurm is still cleaning up after a previous run.",
    "SystemFailure": "A Slurm or system failure stopped it.",
    "RaisedSignal": "The script was killed by a signal.",
}


def state_words(state: str) -> str:
    return STATES.get(state, "")


def reason_words(reason: str) -> str:
    """Plain words for a state reason; Slurm's own text when it is not one the console knows."""
    if not reason:
        return ""
    if reason in REASONS:
        return REASONS[reason]
    if reason.startswith("RaisedSignal"):
        return REASONS["RaisedSignal"]
    for known, words in REASONS.items():
        if known and known != "None" and reason.startswith(known):
            return words
    return reason
