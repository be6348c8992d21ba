"""The `clusterra` command installs on its own: `pip install ./clusterra_cli` into a clean virtualenv brings
requests and nothing of the server, and the command runs there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

# What the console needs and a person's laptop must not: the CLI talks to /v1 over HTTP only.
SERVER_PACKAGES = ("django", "channels", "daphne", "uvicorn", "boto3")
KEPT_OUT = ("CLUSTERRA_", "DJANGO", "PYTHON", "VIRTUAL_ENV")


def test_the_cli_installs_alone_and_runs_without_django(tmp_path):
    # Built from a copy, so that the build's own folders (build/, *.egg-info) land here, not in the checkout.
    source = shutil.copytree(
        REPO / "clusterra_cli",
        tmp_path / "clusterra_cli",
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    # Nothing of this process leaks in: no console settings, no path to the console's own packages.
    env = {k: v for k, v in os.environ.items() if not k.startswith(KEPT_OUT)}

    def run(program: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(venv / "bin" / program), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    installed = run("pip", "install", "--quiet", str(source))
    assert installed.returncode == 0, installed.stderr

    help_page = run("clusterra", "--help")
    assert help_page.returncode == 0, help_page.stderr
    assert help_page.stdout.startswith("usage: clusterra")

    for name in SERVER_PACKAGES:
        imported = run("python", "-c", f"import {name}")
        assert imported.returncode != 0
        assert f"No module named '{name}'" in imported.stderr
