"""`{% load job_rows %}`: the rows of a job list, drawn in Python.

A page of thirty jobs drawn by the template language was ~400 variable lookups, each resolved,
localised and escaped: about half of the job list page's CPU (bench row 8). One format_html per row
writes the same markup. jobs/static/jobs/job_list.js draws the same rows from the JSON when the list
updates itself: change both together.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ui.templatetags.ui import duration, state_badge, when_tag

register = template.Library()

_ROW = (
    '\n    <tr data-job="{}">\n'
    '      <td data-label="Job"><a href="{}">{}</a>{}</td>\n'
    '      <td data-label="Name">{}</td>\n'
    '      <td data-label="Partition">{}</td>\n'
    '      <td data-label="State" class="job-state">{}{}</td>\n'
    '      <td data-label="Reason" title="{}">{}</td>\n'
    '      <td data-label="Submitted">{}</td>\n'
    '      <td data-label="Elapsed">{}</td>\n'
    '      <td data-label="Nodes" class="num">{}</td>\n'
    '      <td data-label="CPUs" class="num">{}</td>\n'
    '      <td data-label="GPUs" class="num">{}</td>\n'
    '      <td data-label="">{}</td>\n'
    "    </tr>\n  "
)
# A constant of our own, no value in it: nothing to escape.
_ARRAY = SafeString(' <small class="muted">array</small>')


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def _elapsed(job: dict[str, Any]) -> str:
    words = duration(job["elapsed_seconds"])
    if job["ticking"]:  # the page redraws it every second from here
        return format_html('<time data-elapsed-since="{}">{}</time>', job["start_time"], words)
    return words


def _cancel(job: dict[str, Any]) -> str:
    if job["finished"]:
        return ""
    return format_html(
        '<a class="btn btn-danger" href="{}">Cancel<span class="visually-hidden"> job {}</span></a>',
        reverse("jobs:cancel", args=[job["cluster"], job["job_id"]]),
        job["job_id"],
    )


def _row(job: dict[str, Any]) -> tuple[Any, ...]:
    tasks = job["tasks"]
    counts = format_html('<br><small class="array-counts">{}</small>', tasks["summary"]) if tasks else ""
    return (
        job["job_id"],
        job["page_url"],
        job["job_id"],
        _ARRAY if tasks else "",
        job["name"],
        job["partition"],
        state_badge(job["state"]),
        counts,
        job["reason_text"],
        job["reason"],
        when_tag(job["times"]["submit"]),
        _elapsed(job),
        _count(job["nodes"]),
        _count(job["cpus"]),
        _count(job["gpus"]),
        _cancel(job),
    )


@register.simple_tag
def job_rows(jobs: list[dict[str, Any]]) -> str:
    """The `<tr>` of each job (jobs.present.for_page's dicts), in order."""
    return format_html_join("", _ROW, (_row(job) for job in jobs))
