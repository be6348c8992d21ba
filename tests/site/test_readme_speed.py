"""The README's speed table is the committed results file it names, made again by bench/readme.py."""

from __future__ import annotations

import json

import pytest

from bench import readme


def test_the_readme_table_is_what_its_results_file_gives():
    found = readme.current(readme.README.read_text())
    assert found is not None, "README.md lost its speed-table markers"
    block, source = found
    assert (readme.REPO / source).is_file(), f"README.md's speed table names {source}, which is not committed"
    assert block == readme.render(json.loads((readme.REPO / source).read_text()), source), (
        f"README.md's speed table differs from {source}; run python -m bench.readme {source}"
    )


def _row(number, name, measurements=(), error=""):
    return {"number": number, "name": name, "measurements": list(measurements), "error": error}


def _measurement(key, console_ms, baseline_ms, target, met):
    return {
        "key": key,
        "title": "echo | via a pipe",
        "console": {"label": "console", "n": 10, "median_ms": console_ms, "p99_ms": console_ms * 2},
        "baseline": {"label": "raw", "n": 10, "median_ms": baseline_ms, "p99_ms": baseline_ms * 2},
        "ratio_median": console_ms / baseline_ms,
        "added_median_ms": console_ms - baseline_ms,
        "target": target,
        "target_met": met,
    }


def test_a_failed_row_a_missed_goal_and_an_added_time_each_say_so():
    result = {
        "mode": "full",
        "machine": {"git_commit": "abcdef123", "cpus": 2, "cpu_model": "CPU", "slurm": "slurm-wlm 22.05.8"},
        "rows": [
            _row(2, "queue", error="RuntimeError: slurmrestd said 500"),
            _row(1, "submit", [_measurement("1", 1500.0, 3.0, {"kind": "ratio", "value": 2.0}, False)]),
            _row(3, "echo", [_measurement("3a", 0.9, 0.2, {"kind": "added_ms", "value": 1.0}, True)]),
        ],
    }
    block = readme.render(result, "bench/results/full-x.json")
    lines = block.splitlines()
    assert lines[0] == "<!-- speed table from bench/results/full-x.json (python -m bench.readme) -->"
    assert lines[-1] == readme.END
    assert "commit abcdef1, 2 cores, CPU, Slurm 22.05.8" in lines[1]
    rows = [
        line
        for line in lines
        if line.startswith("| 1 ") or line.startswith("| 2 ") or line.startswith("| 3a ")
    ]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 2", "| 3a"], "rows are in row order"
    assert "1.50 s / 3.00 s" in rows[0]
    assert f"500.00{readme.TIMES}" in rows[0]
    assert "**no**" in rows[0]
    assert "failed: RuntimeError: slurmrestd said 500" in rows[1]
    assert "(+0.70 ms)" in rows[2]
    assert "≤ +1 ms p50" in rows[2]
    assert rows[2].endswith("| yes |")
    assert "echo \\| via a pipe" in rows[2], "a | in a title would split the Markdown cell"


def test_rewriting_needs_the_markers():
    with pytest.raises(SystemExit, match="no speed-table markers"):
        readme.rewrite("# no table here\n", "block")
