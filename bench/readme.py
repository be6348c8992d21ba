"""The README's speed table, made from one committed results file so the two cannot drift apart.

    python -m bench.readme bench/results/full-….json    rewrite the table in README.md from that run
    python -m bench.readme --check                       exit 1 if README.md's table is not what its run gives

The table sits between two marker lines in README.md; the first names the results file it came from,
so `--check` (and tests/site/test_readme_speed.py) can make it again and compare. Every measurement of
the run is one line, in row order: a row the run left out or that failed says so instead of a number.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BEGIN = re.compile(
    r"^<!-- speed table from (?P<file>bench/results/\S+\.json) \(python -m bench\.readme\) -->$", re.M
)
END = "<!-- end of speed table -->"
# Written as escapes: the linter rightly flags look-alike characters in source text.
DASH, TIMES = "\u2013", "\u00d7"


def render(result: dict[str, Any], source: str) -> str:
    """The Markdown block for one run: a sentence naming the run and machine, then the table."""
    machine = result.get("machine", {})
    commit = (machine.get("git_commit") or "")[:7]
    lines = [
        f"<!-- speed table from {source} (python -m bench.readme) -->",
        f"Run `{Path(source).name}` ({result.get('mode', '?')}, commit {commit or '?'}, "
        f"{machine.get('cpus', '?')} cores, {machine.get('cpu_model', '?')}, Slurm {_release(machine)}, "
        f"{machine.get('database', {}).get('vendor', '?')}):",
        "",
        "| row | what | console median / p99 | baseline | baseline median / p99 | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(result.get("rows", []), key=lambda r: r["number"]):
        if row.get("error"):
            lines.append(f"| {row['number']} | {row['name']} | failed: {_cell(row['error'])} | | | | | |")
            continue
        for m in row["measurements"]:
            lines.append(
                "| "
                + " | ".join(
                    [
                        m["key"],
                        _cell(m["title"]),
                        _pair(m["console"]),
                        _cell(m["baseline"].get("label", "")),
                        _pair(m["baseline"]),
                        _ratio(m),
                        _goal(m.get("target")),
                        {True: "yes", False: "**no**", None: DASH}[m.get("target_met")],
                    ]
                )
                + " |"
            )
    lines.append(END)
    return "\n".join(lines)


def _release(machine: dict[str, Any]) -> str:
    return str(machine.get("slurm", "?")).removeprefix("slurm-wlm ")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.2f} ms"


def _pair(summary: dict[str, Any]) -> str:
    if not summary.get("n"):
        return DASH
    return f"{_ms(summary.get('median_ms'))} / {_ms(summary.get('p99_ms'))}"


def _ratio(m: dict[str, Any]) -> str:
    ratio = m.get("ratio_median")
    if ratio is None:
        return DASH
    words = f"{ratio:.2f}{TIMES}"
    target = m.get("target") or {}
    if target.get("kind") == "added_ms" and m.get("added_median_ms") is not None:
        words += f" ({m['added_median_ms']:+.2f} ms)"
    return words


def _goal(target: dict[str, Any] | None) -> str:
    if not target:
        return DASH
    kind, value = target["kind"], target["value"]
    if kind == "ratio":
        return f"≤ {value:g}{TIMES}"
    if kind == "added_ms":
        return f"≤ +{value:g} ms p50"
    if kind == "p99_ms":
        return f"p99 < {value:g} ms"
    return f"{kind} {value:g}"


def current(readme: str) -> tuple[str, str] | None:
    """The table README.md holds now and the results file it names, or None without markers."""
    begin = BEGIN.search(readme)
    if not begin:
        return None
    end = readme.find(END, begin.start())
    if end < 0:
        return None
    return readme[begin.start() : end + len(END)], begin["file"]


def rewrite(readme: str, block: str) -> str:
    found = current(readme)
    if found is None:
        raise SystemExit(f"bench.readme: README.md has no speed-table markers ({END!r} and its opening line)")
    return readme.replace(found[0], block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", help="a results file under bench/results/")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    readme = README.read_text()
    found = current(readme)
    if args.check:
        if found is None:
            print("bench.readme: README.md has no speed table", file=sys.stderr)
            return 1
        block, source = found
        expected = render(json.loads((REPO / source).read_text()), source)
        if block != expected:
            print(f"bench.readme: README.md's speed table is not what {source} gives")
            print(f"run: python -m bench.readme {source}")
            return 1
        return 0
    if not args.results:
        parser.error("name a results file, or pass --check")
    path = Path(args.results).resolve()
    source = str(path.relative_to(REPO))
    README.write_text(rewrite(readme, render(json.loads(path.read_text()), source)))
    print(f"README.md: speed table from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
