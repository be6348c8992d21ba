"""The terminal page, and the replay of recorded terminals for administrators."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from audit.log import record
from clusters.models import Cluster
from terminal import recording as recordings
from terminal.models import TerminalPolicy, TerminalSession


@require_safe
@login_required
def terminal(request: HttpRequest, slug: str) -> HttpResponse:
    """The page; whether a shell opens is decided by the WebSocket, which shows the decision's sentence.

    `cluster` also gives the page the cluster's navigation (base.html), the way back to the dashboard.
    """
    cluster = get_object_or_404(Cluster, slug=slug)
    context = {
        "cluster": cluster,
        "cwd": request.GET.get("cwd", ""),
        "socket_path": f"/ws/clusters/{cluster.slug}/terminal/",
        # Said before the shell opens, so nobody types into a recorded terminal unaware; the socket's
        # "connected" message then says it of the shell actually opened.
        "recorded": TerminalPolicy.for_cluster(cluster).record,
    }
    return render(request, "terminal/terminal.html", context)


def _may_replay(user) -> bool:
    # Recordings show everything that crossed someone's screen: administrators with the permission only.
    return bool(user.is_active and user.is_staff and user.has_perm("terminal.view_terminalsession"))


@require_GET
@login_required
def replay(request: HttpRequest, pk: int) -> HttpResponse:
    if not _may_replay(request.user):
        raise PermissionDenied("Only administrators may replay terminals.")
    session = get_object_or_404(TerminalSession.objects.select_related("person"), pk=pk)
    context = {
        "session": session,
        "cast_url": reverse("terminal:recording", args=[session.pk]) if session.recording else "",
    }
    return render(request, "terminal/replay.html", context)


@require_GET
@never_cache
@login_required
def recording(request: HttpRequest, pk: int) -> HttpResponse:
    if not _may_replay(request.user):
        raise PermissionDenied("Only administrators may replay terminals.")
    session = get_object_or_404(TerminalSession, pk=pk)
    if not session.recording:
        raise Http404("This terminal was not recorded.")
    try:
        chunks = recordings.open_chunks(session.recording)
    except recordings.RecordingUnavailable as exc:
        record(
            "terminal.replayed",
            actor=request.user,
            cluster=session.cluster_slug,
            target=session.posix_user,
            outcome="error",
            message=str(exc),
            request=request,
            details={"session": session.pk},
        )
        return HttpResponse(str(exc), status=503, content_type="text/plain; charset=utf-8")
    # Watching someone's terminal is itself worth a line in the audit log.
    record(
        "terminal.replayed",
        actor=request.user,
        cluster=session.cluster_slug,
        target=session.posix_user,
        message=f"Recording of terminal {session.pk} ({session.person_name}) opened.",
        request=request,
        details={"session": session.pk},
    )
    response = StreamingHttpResponse(chunks, content_type=recordings.CONTENT_TYPE)
    response["Content-Disposition"] = f'inline; filename="terminal-{session.pk}.cast"'
    return response
