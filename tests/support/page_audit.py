"""Every page of the console, read from its URL map, and what a page must pass in Chromium at any size.

The route half (`url_routes`, `Visit`, `Skip`) needs only Django's URL configuration; the browser half
(`Auditor`) checks one loaded page: nothing scrolls sideways, Sign out can be reached, and axe-core (from
npm, package.json) finds nothing serious. axe is served to the page from the page's own origin by
Playwright's request interception, so the console's Content-Security-Policy stays exactly as it is
(script-src 'self', no inline script) while the page is checked.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from tests.conftest import REPO

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
# Where the page fetches axe from: its own origin, answered by the test (the console serves no such file).
AXE_PATH = "/__page-audit__/axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PHONE_SIZE, DESKTOP_SIZE = "390×844", "1280×800"  # noqa: RUF001 (as people write them)
# axe's impacts, mildest first; the last two fail the suite.
IMPACTS = ("minor", "moderate", "serious", "critical")
BLOCKING = {"serious", "critical"}


# ---- the URL map ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    pattern: str
    name: str  # namespaced ("jobs:detail"); "" when the pattern has none
    params: tuple[str, ...]


def url_routes() -> list[Route]:
    """Every URL pattern of the console with its full route and namespaced name, walking the resolver."""

    def walk(resolver: URLResolver, prefix: str, namespace: str) -> list[Route]:
        found = []
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                found += walk(entry, prefix + str(entry.pattern), inner)
            elif isinstance(entry, URLPattern):
                pattern = prefix + str(entry.pattern)
                found.append(Route(pattern, namespace + (entry.name or ""), parameters(pattern)))
        return found

    return walk(get_resolver(), "", "")


def parameters(pattern: str) -> tuple[str, ...]:
    """The names a pattern takes: `<slug:slug>` and `(?P<url>…)` alike."""
    return tuple(re.findall(r"<(?:\w+:)?(\w+)>", pattern))


def route_keys(routes: list[Route]) -> dict[str, Route]:
    """Each route by its URL name, or by its pattern when it has no name or shares it with another."""
    names = Counter(r.name for r in routes)
    return {(r.name if r.name and names[r.name] == 1 else r.pattern): r for r in routes}


@dataclass(frozen=True)
class Visit:
    """One page to load: who asks for it, its address (filled from the test's objects) and its answer."""

    route: str  # the key of the route it shows (route_keys); "" for a page no route names (the 404)
    role: str  # "anonymous", "person" or "staff"
    url: str  # str.format_map'd with the test's objects: {cluster}, {job}, {pk[app.model]}…
    label: str
    status: int = 200
    shot: str = ""  # the screenshot's name in docs/screenshots/, for the README's gallery
    prepare: str = ""  # a step done in the page before it is checked (a preview, a live terminal)
    then: str = ""  # a step done after it is checked (a form sent, which the next visit shows)
    view: str = ""  # what the screenshot shows at the top of the window (a preview, the output)


@dataclass(frozen=True)
class Skip:
    """A route that is no page to check, and why; `check` proves the reason where it can be proved."""

    reason: str
    check: str = ""  # "not-html": GET answers something else; "post-only": GET answers 405
    role: str = "anonymous"
    url: str = ""


# ---- one page in the browser ------------------------------------------------------------------------


@dataclass
class Violation:
    rule: str
    impact: str
    help: str
    nodes: list[tuple[str, str]]  # (CSS target, start of the element's HTML)


@dataclass
class PageResult:
    """What one visit found, at each size."""

    visit: Visit
    url: str = ""
    status: int = 0
    problems: list[str] = field(default_factory=list)
    # Per size: axe's violations, the widths (document, body, window) and how Sign out was reached.
    violations: dict[str, list[Violation]] = field(default_factory=dict)
    widths: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    sign_out: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        v = self.visit
        return f"{v.label} ({v.route or 'no route'}, {v.role}) {self.url}"


OVERFLOW_JS = """() => {
  const inner = window.innerWidth;
  const doc = document.documentElement.scrollWidth;
  const body = document.body ? document.body.scrollWidth : 0;
  const culprits = [];
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + [...el.classList].slice(0, 3).map(c => '.' + c).join('');
  const clipped = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== 'visible') return true;
    }
    return false;
  };
  if ((doc > inner || body > inner) && document.body) {
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.right <= inner + 1) continue;
      const parent = el.parentElement;
      if (parent !== document.body && parent.getBoundingClientRect().right > inner + 1) continue;
      if (clipped(el)) continue;
      culprits.push(`${name(parent)} > ${name(el)} (to ${Math.round(r.right)} px)`);
      if (culprits.length >= 4) break;
    }
  }
  return {doc, body, inner, culprits};
}"""

AXE_JS = """async (scope) => {
  const result = await axe.run(scope || document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    rule: v.id, impact: v.impact || 'minor', help: v.help,
    nodes: v.nodes.map(n => [n.target.map(String).join(' '), n.html.replace(/\\s+/g, ' ').slice(0, 140)]),
  }));
}"""

# What signs out: the console's form (a POST to a …logout/ address), a link there, or a control so named.
SIGN_OUT_CSS = "form[action*='logout'] button, form[action*='logout'] [type=submit], a[href*='logout']"
SIGN_OUT_NAME = re.compile(r"^\s*(sign|log) ?out\s*$", re.IGNORECASE)


class Auditor:
    """Checks the page a Playwright context has loaded; axe is fetched from `base` (answered by the test)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def serve_axe(self, context: Any) -> None:
        script = AXE.read_bytes()

        def answer(route: Any) -> None:
            route.fulfill(status=200, body=script, content_type="text/javascript; charset=utf-8")

        context.route(self.base + AXE_PATH, answer)

    def check(self, page: Any, result: PageResult, size: str, *, signed_in: bool) -> None:
        """Everything one size must pass; findings go into `result`."""
        widths = page.evaluate(OVERFLOW_JS)
        result.widths[size] = (widths["doc"], widths["body"], widths["inner"])
        if max(widths["doc"], widths["body"]) > widths["inner"]:
            where = "; ".join(widths["culprits"]) or "no single element found"
            result.problems.append(
                f"{size}: scrolls sideways ({max(widths['doc'], widths['body'])} px in a "
                f"{widths['inner']} px window): {where}"
            )
        result.violations[size] = self.axe(page)
        if signed_in:
            how, menu = self.reach_sign_out(page)
            result.sign_out[size] = how
            if not how:
                result.problems.append(f"{size}: no Sign out in view, nor in a menu that opens")
            if menu is not None:
                # The opened menu is checked too: it must not push the page sideways, nor fail axe.
                wide = page.evaluate(OVERFLOW_JS)
                if max(wide["doc"], wide["body"]) > wide["inner"]:
                    result.problems.append(f"{size}: the opened menu scrolls sideways: {wide['culprits']}")
                menu.evaluate("el => el.setAttribute('data-page-audit', '')")
                seen = {(v.rule, n) for v in result.violations[size] for n in v.nodes}
                for v in self.axe(page, "[data-page-audit]"):
                    v.nodes = [n for n in v.nodes if (v.rule, n) not in seen]
                    if v.nodes:
                        result.violations[size].append(v)
                menu.evaluate("el => el.removeAttribute('data-page-audit')")
                menu.locator(":scope > summary").click()

    def axe(self, page: Any, scope: str = "") -> list[Violation]:
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.add_script_tag(url=self.base + AXE_PATH)
        found = page.evaluate(AXE_JS, scope or None)
        return [Violation(v["rule"], v["impact"], v["help"], [tuple(n) for n in v["nodes"]]) for v in found]

    def reach_sign_out(self, page: Any) -> tuple[str, Any]:
        """How a person reaches Sign out here: "visible", "in the menu" (opened, returned), or "" if not."""
        width = page.evaluate("window.innerWidth")
        controls = (
            page.locator(SIGN_OUT_CSS)
            .or_(page.get_by_role("button", name=SIGN_OUT_NAME))
            .or_(page.get_by_role("link", name=SIGN_OUT_NAME))
        )
        for n in range(controls.count()):
            control = controls.nth(n)
            if in_view(control, width):
                return "visible", None
        for n in range(controls.count()):
            control = controls.nth(n)
            menu = control.locator("xpath=ancestor::details[1]")
            if menu.count() != 1 or menu.evaluate("el => el.open"):
                continue
            summary = menu.locator(":scope > summary")
            if not in_view(summary, width):
                continue
            summary.click()
            if in_view(control, width):
                return "in the menu", menu
            summary.click()
        return "", None


def in_view(locator: Any, width: int) -> bool:
    """Shown, and within the window's width (a control off to the right cannot be reached on a phone)."""
    if not locator.is_visible():
        return False
    box = locator.bounding_box()
    return box is not None and box["x"] >= -1 and box["x"] + box["width"] <= width + 1


def impact_counts(results: list[PageResult]) -> Counter[str]:
    """Violations by impact, an element counted once per rule and size."""
    counts: Counter[str] = Counter()
    for result in results:
        for found in result.violations.values():
            for v in found:
                counts[v.impact] += len(v.nodes)
    return counts
