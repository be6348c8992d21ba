"""`{% demo_offer as demo %}`: the sign-in page points newcomers at the demo when this console runs one."""

from __future__ import annotations

from django import template

from accounts.demo import membership

register = template.Library()


@register.simple_tag
def demo_offer() -> membership.Status | None:
    """The demo's status when it is offered here (open, full or closed), else None.

    Full and closed still get the link: the demo page says why, and existing demo people sign in there.
    """
    st = membership.status()
    return st if st.offered else None
