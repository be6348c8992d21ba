"""The floors of DESIGN.md hold: every import of ours points down, and no two modules need each other.

Imports are read from the source (ast), including those inside functions and under TYPE_CHECKING:
an import deferred to a function is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

# DESIGN.md, "Dependencies point down only": a higher floor may import a lower one, never the reverse.
FLOORS = {
    "clusterra_site": 5,
    "job_templates": 4,
    "jobs": 3,
    "files": 3,
    "terminal": 3,
    "access": 2,
    "accounts": 1,
    "clusters": 0,
    "audit": 0,
    "ui": 0,
    "prepared": 0,
}
# The `clusterra` command talks to /v1 over HTTP and is installed without the server's dependencies.
CLI = "clusterra_cli"
CLI_MUST_NOT_IMPORT = (*FLOORS, "django", "channels", "boto3", "botocore")

# clusters knows no person, request or policy, so it imports no app of ours. Its admin page is the
# exception every admin page shares: bulk deletions are audited by audit.admin.AuditedModelAdmin.
CLUSTERS_MAY_IMPORT = {("clusters.admin", "audit.admin")}
# Not apps: code below every app that imports nothing of ours (only Django), so any app may use it.
LIBRARIES = {"prepared"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in (*FLOORS, CLI):
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _ours(name: str) -> str | None:
    """The module of ours that `name` (a module, or an attribute of one) lives in; None if not ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every name `module` imports (modules, or the modules names come from), with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                # `from x import y` imports the module x.y when there is one, else a name of x.
                submodule = f"{source}.{alias.name}"
                yield (submodule if submodule in MODULES else source), node.lineno


def _edges() -> Iterator[tuple[str, str, int]]:
    for module, path in MODULES.items():
        for name, line in _imported(module, path):
            target = _ours(name)
            if target is not None and target != module:
                yield module, target, line
            elif target is None and module.split(".")[0] == CLI:
                yield module, name, line


def _app(module: str) -> str:
    return module.split(".")[0]


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(REPO)}:{line}"


def test_imports_point_down_the_floors():
    upward = [
        f"{_where(module, line)} {module} → {target}"
        for module, target, line in _edges()
        if _app(module) in FLOORS and _app(target) in FLOORS and FLOORS[_app(target)] > FLOORS[_app(module)]
    ]
    assert upward == [], "imports that point up a floor (DESIGN.md):\n" + "\n".join(upward)


def test_clusters_imports_no_app_of_ours():
    found = [
        f"{_where(module, line)} {module} → {target}"
        for module, target, line in _edges()
        if _app(module) == "clusters"
        and _app(target) in FLOORS
        and _app(target) not in ("clusters", *LIBRARIES)
        and (module, target) not in CLUSTERS_MAY_IMPORT
    ]
    assert found == [], "clusters imports another app of ours:\n" + "\n".join(found)


def test_libraries_import_nothing_of_ours():
    found = [
        f"{_where(module, line)} {module} → {target}"
        for module, target, line in _edges()
        if _app(module) in LIBRARIES and _app(target) in FLOORS and _app(target) != _app(module)
    ]
    assert found == [], "a library below the apps imports one of them:\n" + "\n".join(found)


def test_the_cli_imports_nothing_of_the_server():
    found = [
        f"{_where(module, line)} {module} → {target}"
        for module, target, line in _edges()
        if _app(module) == CLI and _app(target) in CLI_MUST_NOT_IMPORT
    ]
    assert found == [], "the clusterra command imports the server or its dependencies:\n" + "\n".join(found)


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Modules that reach one another through imports (strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        # Tarjan's algorithm, iteratively: (module, its targets still to visit).
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_modules_import_each_other_in_a_circle():
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, target, _ in _edges():
        if target in graph:
            graph[module].add(target)
    circles = list(_circles(graph))
    assert circles == [], "modules that import each other:\n" + "\n".join(
        " ⇄ ".join(sorted(c)) for c in circles
    )


def test_the_checks_see_what_they_look_for():
    # They would pass on an empty graph too; this shows they find circles and read the real imports.
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    edges = {(module, target) for module, target, _ in _edges()}
    assert ("jobs.views", "access.present") in edges
    assert ("clusters.headnode", "clusters.aws") in edges  # imported inside a function
    assert ("terminal.transports.local", "terminal.confine") in edges  # a relative import


def test_the_package_list_names_every_app():
    """pyproject's package list is what an install of the console holds: an app left out of it imports
    only from a checkout's own folder (ui, files and job_templates were missing from it)."""
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert sorted(include["include"]) == sorted(f"{name}*" for name in (*FLOORS, CLI))
