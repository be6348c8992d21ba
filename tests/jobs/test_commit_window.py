"""jobs.claims.may_be_committing: a job the console tagged is not adopted while its submit may still commit.

A submit records its job in the transaction that reserved it (jobs.submit), so slurmctld can list the job a
moment before its record is visible to the sync loop. Adopting it then as an outside job would give it two
records and charge it twice; adopting it later is right, when the submit died before its commit.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from clusters.slurm import Job
from jobs import claims


def test_a_tagged_job_is_left_alone_within_the_window_then_adopted():
    now = timezone.now()
    window = claims.commit_window()
    assert window >= timedelta(minutes=1)
    young = Job(job_id=7, extra="clusterra:0123abcd", submit_time=now - timedelta(seconds=1))
    old = Job(job_id=8, extra="clusterra:0123abcd", submit_time=now - window - timedelta(seconds=1))
    assert claims.may_be_committing(young, now)
    assert not claims.may_be_committing(old, now)


def test_the_tag_may_be_in_the_comment_and_only_the_consoles_tag_counts():
    now = timezone.now()
    assert claims.may_be_committing(Job(job_id=9, comment="clusterra:ffff", submit_time=now), now)
    assert not claims.may_be_committing(Job(job_id=10, comment="my own words", submit_time=now), now)
    assert not claims.may_be_committing(Job(job_id=11, extra="clusterra:ffff", submit_time=None), now)
