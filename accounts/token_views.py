"""The API tokens pages: make and revoke your tokens, and hand a new one to `clusterra login`."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import api_tokens
from accounts.forms import TokenForm
from accounts.models import ApiToken


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None, initial={"days": api_tokens.default_days()})
    new_token = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            _, new_token = api_tokens.issue(
                request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"], by=request.user
            )
            form = TokenForm(initial={"days": api_tokens.default_days()})
        else:
            status = 400
    rows = ApiToken.objects.filter(user=request.user).order_by("-created")
    response = render(
        request,
        "accounts/tokens.html",
        {"form": form, "new_token": new_token, "tokens": rows, "now": timezone.now()},
        status=status,
    )
    # The new token is on this page once: it must not be kept by a browser or proxy cache.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if api_tokens.revoke(token, by=request.user, reason="revoked by its owner"):
        messages.success(request, f"API token {token.prefix}… ({token.name}) is revoked.")
    return redirect("accounts:tokens")


def cli_callback(value: str) -> str:
    """Only a loopback http address: the token goes to the CLI on this computer and nowhere else."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1") or not port:
        return ""
    return value


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_for_cli(request: HttpRequest) -> HttpResponse:
    """`clusterra login` opens this page; on approval a new token is posted to the CLI's loopback address."""
    source = request.POST if request.method == "POST" else request.GET
    callback = cli_callback(source.get("callback", ""))
    state = source.get("state", "")
    host = source.get("host", "")[:60]
    if not callback or not state or len(state) > 128 or not state.replace("-", "").replace("_", "").isalnum():
        return render(request, "accounts/cli_login.html", {"invalid": True}, status=400)
    context = {"callback": callback, "state": state, "host": host}
    if request.method == "POST":
        name = f"clusterra CLI on {host}" if host else "clusterra CLI"
        _, raw = api_tokens.issue(request.user, name=name, by=request.user)
        context["token"] = raw
        context["console_url"] = request.build_absolute_uri("/").rstrip("/")
    response = render(request, "accounts/cli_login.html", context)
    response["Cache-Control"] = "no-store"
    return response
