"""Security middleware Django 5.2 lacks: a Content-Security-Policy everywhere, a throttle on /admin/login/."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from django.contrib.sites.shortcuts import get_current_site
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve, reverse

# Every page's policy. Scripts come only from our own static files (no inline script, no eval), so an
# injected <script> or on*= attribute does nothing. Styles allow inline because xterm.js sets the
# geometry of its rows with style attributes, and the dashboard's bars are sized the same way.
# 'self' in connect-src also covers ws:/wss: to this host (the terminal's socket) in CSP Level 3.
# form-action is left out on purpose: a browser applies it to the redirects that follow a form post too,
# and signing in and out posts a form here that redirects to the company IdP, whose address is only
# known from its discovery document at run time. CSRF tokens guard what the forms post here.
BASE_POLICY: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'", "'unsafe-inline'"),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'", "data:"),
    "connect-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'none'",),
    "frame-ancestors": ("'none'",),
}


def _loopback_callback_origin(request: HttpRequest) -> tuple[str, ...]:
    """The `clusterra login` hand-off posts the new token to the CLI on this computer, and nowhere else."""
    from accounts.token_views import cli_callback  # the same check the view applies; accounts sits below

    source = request.POST if request.method == "POST" else request.GET
    callback = cli_callback(source.get("callback", ""))
    if not callback:
        return ()
    parts = urlsplit(callback)
    return (f"{parts.scheme}://{parts.netloc}",)


# What a few pages add to BASE_POLICY, by URL name: each needs something the rest must not have.
PAGE_POLICY: dict[str, dict[str, Callable[[HttpRequest], tuple[str, ...]]]] = {
    # asciinema-player decodes recordings with a WebAssembly module; no other page runs WebAssembly.
    "terminal:replay": {"script-src": lambda request: ("'wasm-unsafe-eval'",)},
    # The form that hands a token to the CLI targets its loopback address (the page submits it itself).
    "accounts:token-cli": {"form-action": lambda request: ("'self'", *_loopback_callback_origin(request))},
}


def policy_for(request: HttpRequest) -> str:
    """The Content-Security-Policy header value for this request's page."""
    directives = dict(BASE_POLICY)
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            match = None
    extra = PAGE_POLICY.get(match.view_name, {}) if match is not None else {}
    for name, sources in extra.items():
        directives[name] = tuple(dict.fromkeys((*directives.get(name, ()), *sources(request))))
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response that does not already carry one (a view may set its own)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy_for(request)
        return response


class AdminLoginThrottleMiddleware:
    """Failed password sign-ins on /admin/login/ count against the same limits as allauth's login page.

    allauth throttles its own form (ACCOUNT_RATE_LIMITS["login_failed"]: per address and per user
    name), but Django's admin has its own login view that nothing throttles; without this, a password
    could be guessed there at full speed. The counters are allauth's, under the key allauth uses, so
    five wrong passwords for one name lock that name out of both doors alike.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._path: str | None = None

    def _admin_login_path(self) -> str:
        if self._path is None:
            self._path = reverse("admin:login")
        return self._path

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or request.path_info != self._admin_login_path():
            return self.get_response(request)
        # allauth's internal rate-limit API is the one that hands back a usage to roll back on success,
        # exactly as allauth does for its own form; the public wrapper only answers yes or no.
        from allauth.core.internal import ratelimit

        username = request.POST.get("username", "").strip().lower()
        key = f"{get_current_site(request).domain}:{username}"
        usage = ratelimit.consume(request, app="allauth.account", action="login_failed", key=key)
        if not usage:
            return ratelimit.respond_429(request)
        response = self.get_response(request)
        signed_in = getattr(request, "user", None) is not None and request.user.is_authenticated
        if signed_in and response.status_code in (302, 303):
            # A right password does not use up an attempt (the admin redirects after signing in).
            usage.rollback()
        return response


class DropTemplateContext:
    """A logging filter for `django.template`: keeps its DEBUG line, drops the traceback that follows it.

    At DEBUG Django logs every variable a template could not resolve with the exception attached, and
    that exception's message is the repr of the whole template context: on the API tokens page, the
    new token; on the CLI hand-off, the same. The line itself (which variable, which template) is
    what a developer wants; the context is a secret's way into the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            record.exc_info = None
            record.exc_text = None
        return True
