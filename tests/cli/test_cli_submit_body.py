"""What `clusterra job submit` sends: a path on the cluster or the script's text (exactly one), and sbatch
options as the request's `options` object."""

from __future__ import annotations

import io

import pytest

from clusterra_cli.client import USAGE

SUBMITTED = {
    "dry_run": False,
    "replayed": False,
    "decision": {"allowed": True, "code": "ok", "message": "This job may run.", "facts": {}},
    "warnings": [],
    "job": {"id": 7},
}
SCRIPT = "#!/bin/bash\n#SBATCH -t 5\necho from a pipeline\n"


@pytest.fixture
def demo(stub):
    stub.on("POST", "/v1/clusters/demo/jobs", SUBMITTED, status=201)
    return stub


def test_script_sends_the_files_text_inline(demo, clusterra, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT)
    result = clusterra("job", "submit", "demo", "--script", str(script), "--name", "ci")
    assert result.code == 0, result.err
    assert demo.asked[-1].body == {"script": SCRIPT, "name": "ci"}
    assert demo.asked[-1].headers["Idempotency-Key"]


def test_script_dash_reads_standard_input(demo, clusterra, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(SCRIPT))
    result = clusterra("job", "submit", "--cluster", "demo", "--script", "-")
    assert result.code == 0, result.err
    assert demo.asked[-1].body == {"script": SCRIPT}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "give the script: --script-path PATH for a file on the cluster, or --script FILE"),
        (
            ("--script-path", "/a.sh", "--script", "-"),
            "give --script-path (a file on the cluster) or --script",
        ),
        (("/a.sh", "--script-path", "/b.sh"), "two script paths given (/a.sh and --script-path /b.sh)"),
        (("--script", "/no/such/file.sh"), "--script /no/such/file.sh: No such file or directory."),
        (("--script-path", "/a.sh", "--option", "Mem=4G"), "--option 'Mem=4G': give an sbatch long option"),
        (
            ("--script-path", "/a.sh", "--option", "mem=1G", "--option", "mem=2G"),
            "--option mem is given twice",
        ),
        (("--script-path", "/a.sh", "--hold", "--option", "hold"), "--hold and --option hold say the same"),
    ],
)
def test_wrong_arguments_are_refused_before_anything_is_sent(demo, clusterra, args, words):
    result = clusterra("job", "submit", "demo", *args)
    assert result.code == USAGE
    assert words in result.err
    assert len(result.err.splitlines()) == 1
    assert demo.asked == []


def test_an_empty_script_is_refused(demo, clusterra, tmp_path):
    (tmp_path / "empty.sh").write_text("\n")
    result = clusterra("job", "submit", "demo", "--script", str(tmp_path / "empty.sh"))
    assert (result.code, result.err) == (USAGE, f"clusterra: --script {tmp_path / 'empty.sh'} is empty.\n")


def test_options_and_hold_go_in_the_options_object(demo, clusterra):
    result = clusterra(
        "job",
        "submit",
        "demo",
        "/fsx/train.sh",
        "--option",
        "ntasks-per-node=4",
        "--option=--mem-per-cpu=2G",
        "--option",
        "exclusive",
        "--option",
        "comment=a=b",
        "--hold",
        "--partition",
        "gpu",
    )
    assert result.code == 0, result.err
    assert demo.asked[-1].body == {
        "script_path": "/fsx/train.sh",
        "partition": "gpu",
        "options": {
            "ntasks-per-node": "4",
            "mem-per-cpu": "2G",
            "exclusive": True,
            "comment": "a=b",
            "hold": True,
        },
    }


def test_a_lone_path_is_the_script_not_a_cluster(demo, clusterra):
    demo.clusters("demo")
    result = clusterra("job", "submit", "/fsx/scripts/train.sh")
    assert result.code == 0, result.err
    assert demo.asked[-1].path == "/v1/clusters/demo/jobs"
    assert demo.asked[-1].body == {"script_path": "/fsx/scripts/train.sh"}
