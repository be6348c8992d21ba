"""A person's job templates on a cluster: the list, and one template filled, previewed, saved and submitted.

**Preview** is the submit page's own dry run (jobs.submit with `dry_run`) of the filled script sent
inline: the same decision, the same final job, the same cost. **Save and submit** decides the same
way first (so a refused job leaves no file behind), writes the script into the person's home *as the
person* (files.home: `~/clusterra-jobs/<template>-<UTC time>.sh`, a new file, never over another), then
submits it by its path through the same jobs.submit as the submit page: its `#SBATCH` lines are read
from the file as the person, the policy decides and reserves, the submit is audited.

So that the preview's job is the job that runs, both carry the same two fields when the script does
not say them itself: the job's name (the template's slug; a bare submit would name it after the file)
and its working directory (the person's home, where an inline script runs, and where relative paths
in a template mean what a person expects).
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from access import policy, refusals
from accounts.models import PosixAccount
from audit.log import record as audit
from clusters import partitions, tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import SlurmError
from files import home
from job_templates.forms import FillForm
from job_templates.models import JobTemplate, usable_by
from jobs import directives, present, scripts
from jobs.models import JobRecord
from jobs.plan import SubmitError
from jobs.submit import Outcome, submit
from jobs.submit_request import SubmitRequest

# The folder in the person's home the filled scripts are saved in.
FOLDER = "clusterra-jobs"
# How many names a save tries when scripts of the same template are saved within one second.
NAME_TRIES = 20


def _cluster(slug: str) -> Cluster:
    return get_object_or_404(Cluster, slug=slug)


def _refused(request: HttpRequest, cluster: Cluster, decision: Any) -> HttpResponse:
    refusals.record(request.user, cluster, decision, request=request)
    return render(
        request, "job_templates/refused.html", {"cluster": cluster, "message": decision.message}, status=403
    )


@login_required
@require_GET
def template_list(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    decision = policy.decide(request.user, "cluster.view", cluster)
    if not decision.allowed:
        return _refused(request, cluster, decision)
    offered = usable_by(request.user, cluster).select_related("cluster").prefetch_related("fields")
    return render(request, "job_templates/list.html", {"cluster": cluster, "templates": offered})


@login_required
@require_http_methods(["GET", "POST"])
def fill(request: HttpRequest, slug: str, template: str) -> HttpResponse:
    cluster = _cluster(slug)
    decision = policy.decide(request.user, "cluster.view", cluster)
    if not decision.allowed:
        return _refused(request, cluster, decision)
    job_template = get_object_or_404(usable_by(request.user, cluster), slug=template)
    choices, error = _partition_choices(request, cluster, job_template)
    context: dict[str, Any] = {
        "cluster": cluster,
        "job_template": job_template,
        "error": error,
        "folder": posixpath.join("~", FOLDER),
    }
    if request.method == "GET":
        initial = {"idempotency_key": uuid.uuid4().hex}
        context["form"] = FillForm(initial=initial, job_template=job_template, partitions=choices)
        return render(request, "job_templates/fill.html", context)

    form = FillForm(request.POST, job_template=job_template, partitions=choices)
    context["form"] = form
    if not form.is_valid():
        return render(request, "job_templates/fill.html", context, status=400)
    script = form.script()
    digest = hashlib.sha256(script.encode()).hexdigest()
    context.update(script=script, script_digest=digest)
    if request.POST.get("action") == "submit":
        if request.POST.get("previewed") == digest:
            return _save_and_submit(request, cluster, job_template, form, script, context)
        # What is saved is exactly what was previewed: a value changed since (or no preview) is shown first.
        context["notice"] = (
            "This is not the script you previewed (a value changed since), so nothing was saved: "
            "here is its preview; submit it if it is right."
        )
    try:
        outcome = _preview(request, cluster, job_template, script)
    except Refusal as e:
        return _failed(request, context, e)
    context.update(present.preview_parts(outcome.plan, outcome.decision), previewed=True)
    return render(request, "job_templates/fill.html", context)


def _preview(request: HttpRequest, cluster: Cluster, job_template: JobTemplate, script: str) -> Outcome:
    """The submit page's dry run of the filled script: the decision, the final job and its cost."""
    said = _said_for(request.user, cluster, job_template, script)
    parsed = SubmitRequest.model_validate({"script": script, **said})
    return submit(request.user, cluster, parsed, dry_run=True, request=request)


def _save_and_submit(
    request: HttpRequest,
    cluster: Cluster,
    job_template: JobTemplate,
    form: FillForm,
    script: str,
    context: dict[str, Any],
) -> HttpResponse:
    key = form.cleaned_data["idempotency_key"]
    earlier = JobRecord.objects.filter(person=request.user, cluster=cluster, idempotency_key=key).first()
    if earlier is not None:
        # A second click of the same form: nothing new is saved or queued.
        if earlier.slurm_job_id is None:
            messages.warning(
                request, "This form's job is still being submitted; look for it in your job list."
            )
            return redirect("jobs:list", slug=cluster.slug)
        messages.info(
            request, f"This form was already submitted as job {earlier.slurm_job_id}; nothing new was queued."
        )
        return redirect("jobs:detail", slug=cluster.slug, job_id=earlier.slurm_job_id)
    try:
        outcome = _preview(request, cluster, job_template, script)
    except Refusal as e:
        return _failed(request, context, e)
    context.update(present.preview_parts(outcome.plan, outcome.decision))
    username = outcome.plan.posix_user
    try:
        path = _save(request, cluster, job_template, username, script, form)
    except Refusal as e:
        return _failed(request, context, e)
    said = _said_for(request.user, cluster, job_template, script)
    context["saved_path"] = path
    try:
        outcome = submit(
            request.user,
            cluster,
            SubmitRequest.model_validate({"script_path": path, **said}),
            idempotency_key=key,
            request=request,
        )
    except Refusal as e:
        return _failed(request, context, e)
    job_id = outcome.record.slurm_job_id
    words = "was already submitted as" if outcome.replayed else "is queued as"
    messages.success(request, f"Saved {path}; it {words} job {job_id}.")
    for warning in outcome.warnings:
        messages.warning(request, f"Slurm said: {warning}")
    return redirect("jobs:detail", slug=cluster.slug, job_id=job_id)


def _save(
    request: HttpRequest,
    cluster: Cluster,
    job_template: JobTemplate,
    username: str,
    script: str,
    form: FillForm,
) -> str:
    """Write the script as the person into ~/clusterra-jobs (made when missing); the path it was saved as."""
    folder = posixpath.join(home.home_of(cluster, username), FOLDER)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    # Checked as text before anything is written: a job is submitted from here only if sbatch may read it.
    scripts.validate(cluster, posixpath.join(folder, f"{job_template.slug}-{stamp}.sh"))
    try:
        home.make_folder(cluster, username, folder)
    except home.FileError as e:
        if e.code != "exists":
            raise
    for attempt in range(1, NAME_TRIES + 1):
        name = f"{job_template.slug}-{stamp}" + (f"-{attempt}" if attempt > 1 else "") + ".sh"
        path = posixpath.join(folder, name)
        try:
            home.write(cluster, username, path, script.encode(), expect="new", mode=home.NEW_SCRIPT_MODE)
        except home.FileError as e:
            if e.code == "exists" and attempt < NAME_TRIES:
                continue
            raise
        break
    values = {f.name: form.cleaned_data[f.name] for f in form.template_fields}
    audit(
        "job_template.save",
        actor=request.user,
        cluster=cluster,
        target=path,
        message=f"Template {job_template.name} filled in and saved as {path} by {username}.",
        request=request,
        details={"template": job_template.slug, "path": path, "values": values},
    )
    return path


def _directives(script: str) -> dict[str, Any]:
    """What the script's #SBATCH lines say; {} when they cannot be read (the submit says why, by line)."""
    try:
        return directives.parse(script).values
    except directives.DirectiveError:
        return {}


def _said_for(person: Any, cluster: Cluster, job_template: JobTemplate, script: str) -> dict[str, Any]:
    """The fields a preview and its submit both send, for what the script does not say itself.

    The job's name is the template's slug. The working directory is the person's home: where the
    inline script of the preview runs by default, said explicitly so the saved one (whose default
    would be its own folder) runs there too. A person never provisioned yet has no home to name:
    their first preview shows that same home as the inline script's default.
    """
    found = _directives(script)
    said: dict[str, Any] = {} if "name" in found else {"name": job_template.slug}
    account = PosixAccount.objects.filter(user=person).first()
    if "chdir" not in found and account is not None:
        said["working_directory"] = home.home_of(cluster, account.username)
    return said


def _failed(request: HttpRequest, context: dict[str, Any], error: Refusal) -> HttpResponse:
    context.update(failure=error, failure_message=present.for_people(error.message))
    if isinstance(error, SubmitError):
        # It got as far as a decision, maybe a final job: the preview shows what was refused.
        context.update(present.preview_parts(error.plan, error.decision))
    return render(request, "job_templates/fill.html", context, status=error.status)


def _partition_choices(
    request: HttpRequest, cluster: Cluster, job_template: JobTemplate
) -> tuple[list[tuple[str, str]], str]:
    """The partitions the person may use (for a partition field), and why none are listed (or "")."""
    if not any(f.kind == "partition" for f in job_template.fields.all()):
        return [], ""
    try:
        found = partitions.partitions(cluster)
    except (SlurmError, tokens.TokenRefused, tokens.KeyUnavailable) as e:
        return [], f"{cluster.name} did not answer, so its partitions are not listed: {e}"
    granted = set(policy.granted_partitions(request.user, cluster, [p.name for p in found]))
    choices = []
    for p in found:
        if p.name in granted:
            label = p.name + (f" — at most {p.max_time_limit} min" if p.max_time_limit else "")
            choices.append((p.name, label))
    return choices, ""
