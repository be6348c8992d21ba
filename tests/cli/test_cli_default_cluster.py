"""Which cluster a command is about: the one named (--cluster wins), the default (`clusterra config set
cluster`), or the only one the person may use; several and none set is a one-line error."""

from __future__ import annotations

import json
import stat

from clusterra_cli.client import DENIED, NOT_FOUND, USAGE

SUBMITTED = {
    "dry_run": False,
    "replayed": False,
    "decision": {"allowed": True, "code": "ok", "message": "This job may run.", "facts": {}},
    "warnings": [],
    "job": {"id": 41},
}


def test_submit_without_a_cluster_uses_the_only_one_the_person_may_use(stub, clusterra):
    stub.clusters("demo")
    stub.on("POST", "/v1/clusters/demo/jobs", SUBMITTED, status=201)
    result = clusterra("job", "submit", "--script-path", "/fsx/scripts/train.sh")
    assert result.code == 0, result.err
    assert "Submitted job 41." in result.out
    assert stub.asked[-1].body == {"script_path": "/fsx/scripts/train.sh"}


def test_several_clusters_and_no_default_is_one_line_that_says_how_to_pick(stub, clusterra):
    stub.clusters("demo", "prod")
    result = clusterra("job", "submit", "--script-path", "/fsx/scripts/train.sh")
    assert result.code == USAGE
    assert result.err == (
        "clusterra: you may use 2 clusters (demo, prod): name one (--cluster ID), "
        "or set a default (clusterra config set cluster ID).\n"
    )
    assert stub.paths("POST") == []


def test_no_cluster_at_all_says_so(stub, clusterra):
    stub.clusters()
    result = clusterra("job", "list")
    assert result.code == DENIED
    assert "You may use no cluster yet" in result.err


def test_the_default_is_set_by_name_or_id_kept_by_id_and_the_flag_wins(stub, clusterra):
    stub.clusters("demo", "prod")
    set_by_name = clusterra("config", "set", "cluster", "PROD cluster")
    assert set_by_name.code == 0, set_by_name.err
    assert json.loads(clusterra.config.read_text()) == {"url": stub.url, "cluster": "prod"}
    assert stat.S_IMODE(clusterra.config.stat().st_mode) == 0o600
    assert clusterra("config", "get", "cluster").out == "prod\n"

    stub.on("GET", "/v1/clusters/prod/jobs", {"jobs": [], "total": 0, "page": 1, "pages": 1})
    stub.on("GET", "/v1/clusters/demo/jobs", {"jobs": [], "total": 0, "page": 1, "pages": 1})
    asked = len(stub.asked)
    assert clusterra("job", "list").code == 0
    assert stub.paths()[asked:] == ["/v1/clusters/prod/jobs"]  # no question about the clusters
    assert clusterra("job", "list", "--cluster", "demo").code == 0
    assert clusterra("job", "list", "demo").code == 0
    assert stub.paths()[-2:] == ["/v1/clusters/demo/jobs", "/v1/clusters/demo/jobs"]

    assert clusterra("config", "unset", "cluster").code == 0
    unset = clusterra("config", "get", "cluster")
    assert (unset.code, unset.out) == (1, "")
    assert "No default cluster is set" in unset.err


def test_an_unknown_cluster_is_refused_naming_the_persons_own(stub, clusterra):
    stub.clusters("demo")
    result = clusterra("config", "set", "cluster", "elsewhere")
    assert result.code == NOT_FOUND
    assert result.err == "clusterra: You may use no cluster called 'elsewhere'; yours: demo (Demo cluster).\n"
    assert not clusterra.config.exists()


def test_an_id_set_before_signing_in_is_kept_and_login_keeps_it(stub, clusterra):
    kept = clusterra("config", "set", "cluster", "demo", token=None)
    assert kept.code == 0
    assert "kept demo without checking it" in kept.err
    stub.on("GET", "/v1/me", {"username": "ada"})
    assert clusterra("login", "--token", "ct_new", token=None).code == 0
    stored = json.loads(clusterra.config.read_text())
    assert stored == {"url": stub.url, "token": "ct_new", "cluster": "demo"}
    # Signing out forgets the token, not the choice of cluster.
    assert clusterra("logout").code == 0
    assert json.loads(clusterra.config.read_text()) == {"url": stub.url, "cluster": "demo"}


def test_the_default_belongs_to_its_console(stub, clusterra):
    stub.clusters("demo", "prod")
    assert clusterra("config", "set", "cluster", "prod").code == 0
    other = clusterra("config", "get", "cluster", url="http://127.0.0.1:9")
    assert other.code == 1


def test_a_positional_cluster_and_a_different_flag_are_refused(stub, clusterra):
    result = clusterra("job", "list", "demo", "--cluster", "prod")
    assert result.code == USAGE
    assert "two clusters named (demo and --cluster prod)" in result.err
    assert stub.asked == []


def test_partitions_and_quota_use_the_default_too(stub, clusterra):
    stub.clusters("demo")
    stub.on("GET", "/v1/clusters/demo/quota", {"quotas": []})
    result = clusterra("quota")
    assert result.out == "No quota applies to you on demo.\n"
