"""The file pages: browse the person's home on a cluster, edit a text file, make a new one, upload, download.

Who may: the person must be allowed to work on the cluster the way the job and terminal doors decide
it (access.policy: may submit there, or may open its terminal; whoever may do either can already
change their home), and their POSIX account is made ready just in time as for a submit. Everything
else (which file may be read or written) is decided by the kernel on the head node, as the person
(files.home). Every write is audited, successful or not; reads are not.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from access import policy, refusals
from accounts import provisioning
from accounts.provisioning import ProvisioningError
from audit.log import record
from clusters.models import Cluster
from files import home as files
from files.forms import EditorForm, NewForm, UploadForm, line_endings, starter_script
from files.home import Content, FileError
from jobs.scripts import under_roots


def _cluster(slug: str) -> Cluster:
    return get_object_or_404(Cluster, slug=slug)


def may_use_files(person: Any, cluster: Cluster) -> policy.Decision:
    """The policy's answer for the file pages: may submit on the cluster, or may open its terminal.

    Both are decisions the console already makes for doors that act in the person's home; no new
    rule is made here. When neither allows it, the submit decision's sentence is the one shown.
    """
    decision = policy.may_submit(person, cluster)
    if decision.allowed:
        return decision
    terminal = policy.decide(person, "terminal.open", cluster)
    return terminal if terminal.allowed else decision


def _account(request: HttpRequest, cluster: Cluster, path: str = "") -> str:
    """The person's POSIX name on the cluster, made ready just in time; FileError when they may not."""
    decision = may_use_files(request.user, cluster)
    if not decision.allowed:
        # Audited under the door that was asked, not under the submit whose decision it borrows.
        facts = {**decision.facts, "action": "files.open", "decided_as": decision.facts.get("action")}
        asked = replace(decision, facts=facts)
        refusals.record(request.user, cluster, asked, request=request, target=path)
        raise FileError(decision.message, code=decision.code, status=403)
    try:
        return provisioning.ready_account(request.user, cluster).username
    except ProvisioningError as e:
        status = 403 if e.code in ("inactive", "locked", "cluster_disabled") else 502
        raise FileError(e.message, code=f"account_{e.code}", status=status) from None


def _url(name: str, cluster: Cluster, path: str, **extra: str) -> str:
    return f"{reverse(name, args=[cluster.slug])}?{urlencode({'path': path, **extra})}"


def _problem(
    request: HttpRequest, cluster: Cluster, error: FileError, *, back: str = "", download: str = ""
) -> HttpResponse:
    """A page that says what went wrong in one sentence, with the way back; never a traceback."""
    context = {"cluster": cluster, "message": error.message, "back": back, "download": download}
    return render(request, "files/problem.html", context, status=error.status)


def _audit(
    request: HttpRequest,
    cluster: Cluster,
    action: str,
    path: str,
    *,
    message: str,
    error: FileError | None = None,
    **details: Any,
) -> None:
    """One event per write asked for: done (allowed), refused (denied) or not reached (error)."""
    outcome = "allowed" if error is None else "error" if error.status >= 500 else "denied"
    record(
        action,
        actor=request.user,
        cluster=cluster,
        target=path,
        outcome=outcome,
        reason=error.code if error is not None else "",
        message=error.message if error is not None else message,
        request=request,
        details=details,
    )


def _mode(mode: int) -> str:
    return f"0{mode:o}" if mode < 0o1000 else f"{mode:o}"


# --- browse -------------------------------------------------------------------------------------


@login_required
@require_GET
def browse(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    show_hidden = request.GET.get("hidden") == "1"
    try:
        username = _account(request, cluster)
        home = files.home_of(cluster, username)
        path = files.checked(cluster, username, request.GET.get("path") or home)
        folder = files.listing(cluster, username, path)
    except FileError as e:
        if e.code == "not_a_folder" and e.path:
            return redirect(_url("files:edit", cluster, e.path))
        return _problem(request, cluster, e, back=reverse("files:browse", args=[cluster.slug]))
    entries = sorted(
        (e for e in folder.entries if show_hidden or not e.hidden),
        key=lambda e: (not e.is_folder, e.name.casefold(), e.name),
    )
    hidden_count = sum(1 for e in folder.entries if e.hidden)
    keep = {"hidden": "1"} if show_hidden else {}
    rows = [
        {
            "entry": e,
            "url": _open_url(cluster, e, keep),
            "download": _url("files:download", cluster, e.path) if e.path and e.is_file else "",
        }
        for e in entries
    ]
    context = {
        "cluster": cluster,
        "path": path,
        "home": home,
        "crumbs": _crumbs(home, path, keep),
        "up": _url("files:browse", cluster, posixpath.dirname(path), **keep) if path != home else "",
        "rows": rows,
        "truncated": folder.truncated,
        "max_entries": files.MAX_ENTRIES,
        "show_hidden": show_hidden,
        "hidden_count": hidden_count,
        "toggle_hidden": _url("files:browse", cluster, path, **({} if show_hidden else {"hidden": "1"})),
        "new_url": _url("files:new", cluster, path),
        "upload_url": _url("files:upload", cluster, path),
        "terminal_url": (
            f"{reverse('terminal:page', args=[cluster.slug])}?{urlencode({'cwd': path})}"
            if policy.decide(request.user, "terminal.open", cluster).allowed
            else ""
        ),
        "resolved": folder.resolved if folder.resolved != path else "",
    }
    return render(request, "files/browse.html", context)


def _open_url(cluster: Cluster, entry: files.Entry, keep: dict[str, str]) -> str:
    """A folder opens in the listing, a file in the editor; anything else (a pipe, a device) opens nowhere."""
    if not entry.path:
        return ""
    if entry.is_folder:
        return _url("files:browse", cluster, entry.path, **keep)
    return _url("files:edit", cluster, entry.path) if entry.is_file else ""


def _crumbs(home: str, path: str, keep: dict[str, str]) -> list[dict[str, str]]:
    """Home, then each folder below it down to `path`, each with its link."""
    crumbs = [{"label": "Home", "path": home}]
    below = path[len(home) :].strip("/")
    current = home
    for part in below.split("/") if below else []:
        current = f"{current}/{part}"
        crumbs.append({"label": part, "path": current})
    return [
        {**c, "url": f"?{urlencode({'path': c['path'], **keep})}", "last": i == len(crumbs) - 1}
        for i, c in enumerate(crumbs)
    ]


# --- edit ---------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def edit(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    try:
        username = _account(request, cluster)
        path = files.checked(cluster, username, request.GET.get("path"))
    except FileError as e:
        return _problem(request, cluster, e, back=reverse("files:browse", args=[cluster.slug]))
    folder_url = _url("files:browse", cluster, posixpath.dirname(path))
    if request.method == "POST":
        return _save(request, cluster, username, path)
    try:
        content = files.read(cluster, username, path, limit=files.max_edit_bytes())
        text = files.text_of(content)
    except FileError as e:
        download = _url("files:download", cluster, path) if e.code in ("not_text", "too_large") else ""
        return _problem(request, cluster, e, back=folder_url, download=download)
    form = EditorForm(initial={"text": text, "version": content.version, "line_endings": line_endings(text)})
    return _editor(request, cluster, path, form, content=content)


def _editor(
    request: HttpRequest,
    cluster: Cluster,
    path: str,
    form: EditorForm,
    *,
    content: Content | None = None,
    error: FileError | None = None,
    overwrite: str = "",
    status: int = 200,
) -> HttpResponse:
    resolved = content.resolved if content is not None else path
    # What the submit page would accept: under the cluster's script roots (the link's target too), and a
    # script as sbatch wants it (#! first); an output file or notes get no button that can only fail.
    shown = form["text"].value() or ""
    submittable = (
        under_roots(path, cluster.script_roots)
        and under_roots(resolved, cluster.script_roots)
        and shown.startswith("#!")
    )
    context = {
        "cluster": cluster,
        "path": path,
        "name": posixpath.basename(path),
        "form": form,
        "content": content,
        "mode": _mode(content.mode) if content is not None else "",
        "resolved": resolved if resolved != path else "",
        "error": error,
        "overwrite": overwrite,
        "folder_url": _url("files:browse", cluster, posixpath.dirname(path)),
        "download_url": _url("files:download", cluster, path),
        "submit_url": (
            f"{reverse('jobs:submit', args=[cluster.slug])}?{urlencode({'script_path': path})}"
            if submittable
            else ""
        ),
    }
    return render(request, "files/edit.html", context, status=status)


def _save(request: HttpRequest, cluster: Cluster, username: str, path: str) -> HttpResponse:
    form = EditorForm(request.POST)
    if not form.is_valid():
        error = FileError("The form was not complete; open the file again.", code="invalid_request")
        return _editor(request, cluster, path, form, error=error, status=400)
    data = form.content()
    limit = files.max_edit_bytes()
    if len(data) > limit:
        error = FileError(
            f"The text is {files.size_words(len(data))}; the editor saves at most {files.size_words(limit)}.",
            code="too_large",
            status=413,
            path=path,
        )
        return _editor(request, cluster, path, form, error=error, status=413)
    overwrite = request.POST.get("overwrite", "")
    expect = overwrite if _is_version(overwrite) else form.cleaned_data["version"]
    try:
        written = files.write(cluster, username, path, data, expect=expect)
    except FileError as e:
        _audit(request, cluster, "files.saved", path, message=e.message, error=e, bytes=len(data))
        current = ""
        if e.code == "changed":
            try:
                current = files.read(cluster, username, path, limit=limit).version
            except FileError:
                current = "any"  # gone (or no longer text): saving anyway writes the person's text
        return _editor(request, cluster, path, form, error=e, overwrite=current, status=e.status)
    _audit(
        request,
        cluster,
        "files.saved",
        path,
        message=f"Saved {path} ({files.size_words(written.size)}, mode {_mode(written.mode)}).",
        bytes=written.size,
        mode=_mode(written.mode),
    )
    messages.success(request, f"Saved {path}.")
    return redirect(_url("files:edit", cluster, path))


def _is_version(value: str) -> bool:
    return value == "any" or (len(value) == 64 and all(c in "0123456789abcdef" for c in value))


# --- new file or folder -------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def new(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    try:
        username = _account(request, cluster)
        folder = files.checked(cluster, username, request.GET.get("path") or files.home_of(cluster, username))
    except FileError as e:
        return _problem(request, cluster, e, back=reverse("files:browse", args=[cluster.slug]))
    context: dict[str, Any] = {
        "cluster": cluster,
        "folder": folder,
        "folder_url": _url("files:browse", cluster, folder),
        "script_mode": f"0{files.NEW_SCRIPT_MODE}",
        "file_mode": f"0{files.NEW_FILE_MODE}",
    }
    if request.method == "GET":
        context["form"] = NewForm()
        return render(request, "files/new.html", context)
    form = NewForm(request.POST)
    context["form"] = form
    if not form.is_valid():
        return render(request, "files/new.html", context, status=400)
    kind = form.cleaned_data["kind"]
    name = form.cleaned_data["name"]
    try:
        path = files.child(folder, name)
    except FileError as e:
        form.add_error("name", e.message)
        return render(request, "files/new.html", context, status=400)
    action = "files.folder_created" if kind == "folder" else "files.created"
    try:
        if kind == "folder":
            files.make_folder(cluster, username, path)
        else:
            text = starter_script(name) if kind == "script" else ""
            mode = files.NEW_SCRIPT_MODE if kind == "script" else files.NEW_FILE_MODE
            files.write(cluster, username, path, text.encode(), expect="new", mode=mode)
    except FileError as e:
        _audit(request, cluster, action, path, message=e.message, error=e, kind=kind)
        context["error"] = e
        return render(request, "files/new.html", context, status=e.status)
    words = {"folder": "folder", "script": "job script", "file": "file"}[kind]
    _audit(request, cluster, action, path, message=f"Made the {words} {path}.", kind=kind)
    messages.success(request, f"Made the {words} {path}.")
    if kind == "folder":
        return redirect(_url("files:browse", cluster, path))
    return redirect(_url("files:edit", cluster, path))


# --- upload -------------------------------------------------------------------------------------


class _UploadLimit(FileUploadHandler):
    """Drops an uploaded file as soon as it passes the limit, so an oversized one is not even spooled."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.too_large = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self.too_large = True
            raise SkipFile
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


@csrf_exempt
def upload(request: HttpRequest, slug: str) -> HttpResponse:
    # The limit's handler goes first, before anything reads the body: the CSRF check reads it too, so
    # it is made inside (csrf_protect), as Django's documentation on upload handlers describes.
    limit = _UploadLimit(request, files.max_upload_bytes())
    request.upload_handlers.insert(0, limit)
    return _upload(request, slug, limit)


@csrf_protect
@login_required
@require_http_methods(["GET", "POST"])
def _upload(request: HttpRequest, slug: str, limit: _UploadLimit) -> HttpResponse:
    cluster = _cluster(slug)
    try:
        username = _account(request, cluster)
        folder = files.checked(cluster, username, request.GET.get("path") or files.home_of(cluster, username))
    except FileError as e:
        return _problem(request, cluster, e, back=reverse("files:browse", args=[cluster.slug]))
    most = files.max_upload_bytes()
    context: dict[str, Any] = {
        "cluster": cluster,
        "folder": folder,
        "folder_url": _url("files:browse", cluster, folder),
        "max_bytes": most,
        "max_words": files.size_words(most),
    }
    if request.method == "GET":
        context["form"] = UploadForm()
        return render(request, "files/upload.html", context)
    form = UploadForm(request.POST, request.FILES)
    context["form"] = form
    if limit.too_large:
        error = FileError(
            f"The file is larger than {files.size_words(most)}, the most an upload may be; nothing was "
            "written. Copy bigger files to the cluster another way (scp, or the terminal).",
            code="too_large",
            status=413,
        )
        _audit(request, cluster, "files.uploaded", folder, message=error.message, error=error)
        context["error"] = error
        return render(request, "files/upload.html", context, status=413)
    if not form.is_valid():
        return render(request, "files/upload.html", context, status=400)
    uploaded = form.cleaned_data["file"]
    replace = form.cleaned_data["replace"]
    try:
        path = files.child(folder, uploaded.name)
        if uploaded.size > most:  # the handler saw it first; this holds if the handlers change
            raise FileError(
                f"The file is larger than {files.size_words(most)}, the most an upload may be.",
                code="too_large",
                status=413,
            )
        written = files.write(
            cluster,
            username,
            path,
            uploaded.read(),
            expect="any" if replace else "new",
            mode=files.NEW_FILE_MODE,
        )
    except FileError as e:
        target = e.path or posixpath.join(folder, uploaded.name)
        _audit(request, cluster, "files.uploaded", target, message=e.message, error=e, bytes=uploaded.size)
        if e.code == "exists":
            e = FileError(
                f"{e.path} already exists; tick “Replace a file of the same name” to overwrite it.",
                code="exists",
                status=409,
                path=e.path,
            )
        context["error"] = e
        return render(request, "files/upload.html", context, status=e.status)
    _audit(
        request,
        cluster,
        "files.uploaded",
        path,
        message=f"Uploaded {path} ({files.size_words(written.size)}).",
        bytes=written.size,
        replaced=replace,
    )
    messages.success(request, f"Uploaded {path} ({files.size_words(written.size)}).")
    return redirect(_url("files:browse", cluster, folder))


# --- download -----------------------------------------------------------------------------------


@login_required
@require_GET
@never_cache
def download(request: HttpRequest, slug: str) -> HttpResponse:
    cluster = _cluster(slug)
    try:
        username = _account(request, cluster)
        path = files.checked(cluster, username, request.GET.get("path"))
        content = files.read(cluster, username, path, limit=files.max_download_bytes())
    except FileError as e:
        return _problem(request, cluster, e, back=reverse("files:browse", args=[cluster.slug]))
    # Always an attachment of an opaque type: a file of the person's must never run as a page of ours.
    response = HttpResponse(content.data, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, content.name)
    response["X-Content-Type-Options"] = "nosniff"
    return response
