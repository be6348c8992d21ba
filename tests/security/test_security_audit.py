"""Static checks: bandit finds nothing of medium severity or worse in the code that is deployed.

pip-audit runs in `make audit`, not here: it needs PyPI's per-release vulnerability data, which the
package index reachable from CI does not serve, and an audit that audits nothing must not pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, require

# The code that runs in production (tests, bench/ and scripts are not deployed).
PACKAGES = [
    "clusterra_site",
    "accounts",
    "access",
    "audit",
    "clusters",
    "jobs",
    "terminal",
    "prepared",
    "clusterra_cli",
]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    require(found is not None, f"{name} is not installed: pip install -e '.[dev]'")
    return str(found)


def test_bandit_finds_nothing_of_medium_severity_or_worse():
    # -ll: medium and high only. The low ones are assert in a type guard, random for jitter,
    # subprocess use with fixed argument lists: each read and judged, none a finding.
    done = subprocess.run(
        [tool("bandit"), "-r", *PACKAGES, "-ll", "-f", "json", "-q", "-x", "*/migrations/*"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    findings = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]
    ]
    print(f"bandit: {len(findings)} findings in {report['metrics']['_totals']['loc']} lines")
    assert findings == []
    assert done.returncode == 0, done.stderr
