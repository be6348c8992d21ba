"""The demo's pages: /demo/ (ask for a link, or join when signed in), the mailed link, and their refusals."""

from __future__ import annotations

import logging
import math
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required, login_required
from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.adapter import LOGIN
from accounts.demo import links, membership
from accounts.demo.membership import DemoRefused, Status
from audit.log import record
from ui.templatetags.ui import when

logger = logging.getLogger("clusterra.accounts")

SESSION_SENT_TO = "clusterra_demo_sent_to"
# The session's sign-in backend: the person is already checked, no credential is left to test.
BACKEND = "django.contrib.auth.backends.ModelBackend"

# What a refused person reads, by code: title, what happened and what to do next, HTTP status.
PAGES: dict[str, tuple[str, str, int]] = {
    "not_configured": (
        "This console has no demo",
        "There is no self-service demo here. If you belong to the organisation that runs this console, "
        "sign in with your organisation's account.",
        404,
    ),
    "not_ready": (
        "The demo is not ready yet",
        "Its cluster or its group is not set up (an administrator runs manage.py seed_demo). "
        "Try again later.",
        503,
    ),
    "turned_off": (
        "The demo is closed to new people",
        "No new demo accounts are being made right now. If you are already in the demo, ask for a "
        "sign-in link on the demo page.",
        503,
    ),
    "full": (
        "The demo is full",
        "All {max_people} places are taken. Places free up as demo accounts end, {days} days after they "
        "start; try again in a day or two.",
        503,
    ),
    "throttled": (
        "Too many links were asked for",
        "Your network (or this address) asked for {per_hour} links within the last hour. "
        "Wait {wait} and try again; a link you already have still works.",
        429,
    ),
    "mail_failed": (
        "The mail could not be sent",
        "The console could not hand your link to its mail server. Nothing was made; "
        "try again in a few minutes.",
        503,
    ),
    "bad_link": (
        "This link is not valid",
        "It may have been cut short or changed on its way. Open the whole link from the mail, "
        "or ask for a new one.",
        400,
    ),
    "expired": (
        "This link has expired",
        "A link works for {link_minutes} minutes after it is sent. Ask for a new one.",
        410,
    ),
    "used": (
        "This link has already been used",
        "Each link works once (opening a newer link also spends older ones). Ask for a new one to "
        "sign in again.",
        410,
    ),
    "deactivated": (
        "This demo account has ended",
        "The console account with this address is deactivated: demo accounts end after {days} days. "
        "Nothing was changed. If you think this is a mistake, ask the administrator.",
        403,
    ),
    "use_your_sign_in": (
        "This address belongs to an account with its own sign-in",
        "A mailed link does not sign in an account that was not made by the demo. Sign in the usual way "
        "(for example with your organisation's account), then press “Join the demo” on the demo page.",
        403,
    ),
    "demo_ended": (
        "Your demo time is over",
        "You were in the demo until {ended}; each person has one demo period.",
        403,
    ),
}

# Where each refusal's page points next: the sign-in page, or back to the demo page for a new link.
SIGN_IN_NEXT = {"not_configured", "use_your_sign_in"}
DEMO_PAGE_NEXT = {"turned_off", "throttled", "mail_failed", "bad_link", "expired", "used"}


class LinkForm(forms.Form):
    email = forms.EmailField(label="Your e-mail address", max_length=254)

    def clean_email(self) -> str:
        # Addresses are compared whole and case-blind everywhere in the demo (links, throttle, accounts).
        return self.cleaned_data["email"].strip().lower()


def refused(request: HttpRequest, code: str, **numbers: Any) -> HttpResponse:
    """The page for a refusal code, with the settings' numbers filled in."""
    cfg = membership.config()
    title, text, status = PAGES[code]
    values = {
        "days": cfg.days,
        "max_people": cfg.max_people,
        "per_hour": cfg.per_hour,
        "link_minutes": cfg.link_minutes,
        **numbers,
    }
    back = "sign_in" if code in SIGN_IN_NEXT else "demo" if code in DEMO_PAGE_NEXT else ""
    context = {"title": title, "explanation": text.format(**values), "code": code, "back": back}
    response = render(request, "demo/refused.html", context, status=status)
    if "retry_after" in numbers:
        response["Retry-After"] = str(numbers["retry_after"])
    return response


def _audit(action: str, code: str, request: HttpRequest, *, target: str = "") -> None:
    """A refusal in the audit log, with the title the person was shown."""
    user = request.user if request.user.is_authenticated else None
    title = PAGES[code][0] if code in PAGES else code
    record(
        action, actor=user, target=target, outcome="denied", reason=code, message=title + ".", request=request
    )


@login_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def start(request: HttpRequest) -> HttpResponse:
    """/demo/: an e-mail form for anyone (sign up or sign in), "Join the demo" for the signed-in."""
    st = membership.status()
    if not st.offered:
        if request.method == "POST":
            _audit("demo.link_refused", st.reason, request)
        return refused(request, st.reason)
    if request.user.is_authenticated and request.method == "GET":
        return _signed_in_page(request, st)
    form = LinkForm(request.POST if request.method == "POST" else None)
    if request.method == "GET":
        return _start_page(request, st, form)
    if not form.is_valid():
        record(
            "demo.link_refused",
            target=request.POST.get("email", "")[:254],
            outcome="denied",
            reason="bad_address",
            message="Not an e-mail address: " + "; ".join(form.errors.get("email", [])),
            request=request,
        )
        return _start_page(request, st, form, status=400)
    email = form.cleaned_data["email"]
    try:
        signup, token = links.request_link(email, request)
    except links.Throttled as e:
        _audit("demo.link_refused", "throttled", request, target=email)
        return refused(request, "throttled", wait=_minutes(e.retry_after), retry_after=e.retry_after)
    except DemoRefused as e:
        _audit("demo.link_refused", e.code, request, target=email)
        return refused(request, e.code)
    url = request.build_absolute_uri(reverse("demo:link", args=[token]))
    try:
        _send_link(email, url, st)
    except Exception as e:  # the SMTP server's errors are many (OSError, smtplib's); each ends here
        logger.warning("demo link to %s not sent: %r", email, e)
        record(
            "demo.link_sent",
            target=email,
            outcome="error",
            reason="mail_failed",
            message=f"The mail could not be sent ({type(e).__name__}).",
            request=request,
            details={"signup_id": signup.pk},
        )
        return refused(request, "mail_failed")
    record(
        "demo.link_sent",
        target=email,
        message=f"A demo link was mailed to {email}.",
        request=request,
        details={"signup_id": signup.pk, "client": signup.client},
    )
    request.session[SESSION_SENT_TO] = email
    return redirect("demo:sent")


@login_not_required
@never_cache
def sent(request: HttpRequest) -> HttpResponse:
    email = request.session.get(SESSION_SENT_TO)
    if not email:
        return redirect("demo:start")
    cfg = membership.config()
    context = {"email": email, "link_minutes": cfg.link_minutes, "mail_printed": _mail_is_printed()}
    return render(request, "demo/sent.html", context)


def _mail_is_printed() -> bool:
    """Without a mail server (CLUSTERRA_EMAIL_HOST unset) a link is printed in the server log, not mailed."""
    return settings.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend"


@login_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def link(request: HttpRequest, token: str) -> HttpResponse:
    """The mailed link. GET only looks (mail scanners open links too); the button's POST acts."""
    if request.method == "GET":
        try:
            opened = links.check(token)
        except DemoRefused as e:
            return refused(request, e.code, **_ended(e))
        return render(request, "demo/confirm.html", {"opened": opened})
    try:
        opened = links.use(token, request=request)
    except DemoRefused as e:
        _audit("demo.link_refused", e.code, request)
        return refused(request, e.code, **_ended(e))
    # use() returns only once the person exists and is in the demo.
    assert opened.user is not None
    assert opened.member is not None
    login(request, opened.user, backend=BACKEND)
    record(
        LOGIN,
        actor=opened.user,
        target=opened.user.get_username(),
        message="Signed in with a demo link.",
        request=request,
        details={"method": "demo_link", "joined": opened.action == "join", "signup_id": opened.signup.pk},
    )
    request.session.pop(SESSION_SENT_TO, None)
    _welcome(request, opened.member, first=opened.action == "join")
    return redirect("home")


@require_POST
@login_required
def join(request: HttpRequest) -> HttpResponse:
    """ "Join the demo" for a person who is already signed in (through the IdP, typically)."""
    already = membership.membership(request.user)
    try:
        member = membership.join_existing(request.user, request=request)
    except DemoRefused as e:
        _audit("demo.join_refused", e.code, request, target=request.user.get_username())
        return refused(request, e.code, **_ended(e))
    _welcome(request, member, first=already is None)
    return redirect("home")


def _signed_in_page(request: HttpRequest, st: Status) -> HttpResponse:
    member = membership.membership(request.user)
    context = {"status": st, "member": member, "now": timezone.now()}
    return render(request, "demo/joined.html" if member else "demo/join.html", context)


def _start_page(request: HttpRequest, st: Status, form: LinkForm, *, status: int = 200) -> HttpResponse:
    context = {"status": st, "form": form, "notice": PAGES.get(st.reason) if not st.accepting else None}
    if context["notice"]:
        title, text, _ = context["notice"]
        cfg = st.config
        context["notice"] = (title, text.format(days=cfg.days, max_people=cfg.max_people))
    return render(request, "demo/start.html", context, status=status)


def _send_link(email: str, url: str, st: Status) -> None:
    context = {"url": url, "link_minutes": st.config.link_minutes, "cluster": st.cluster}
    subject = render_to_string("demo/email/link_subject.txt", context).strip()
    body = render_to_string("demo/email/link.txt", context)
    send_mail(subject, body, None, [email])


def _welcome(request: HttpRequest, member: Any, *, first: bool) -> None:
    until = when(member.expires)
    if first:
        messages.success(request, f"Welcome to the demo. Your demo access lasts until {until}.")
    else:
        messages.info(request, f"Signed in. Your demo access lasts until {until}.")


def _ended(e: DemoRefused) -> dict[str, str]:
    return {"ended": e.detail} if e.code == "demo_ended" else {}


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "a minute" if minutes == 1 else f"{minutes} minutes"
