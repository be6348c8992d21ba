"""Entry point of the `clusterra` command: the console's /v1 API from a terminal, tables or --json."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

from clusterra_cli import __version__, config, watch
from clusterra_cli.client import (
    DENIED,
    EXIT_CODES,
    NOT_FOUND,
    NOT_SIGNED_IN,
    OK,
    UNREACHABLE,
    USAGE,
    ApiFailure,
    Client,
)
from clusterra_cli.login import LoginFailed, browser_login

DEFAULT_URL = config.DEFAULT_URL

EPILOG = (
    "exit codes:\n"
    + "\n".join(f"  {code}  {words}" for code, words in EXIT_CODES.items())
    + (
        "\n\nconfiguration: `clusterra login` writes the console's URL and your API token to "
        "~/.config/clusterra/config.json (mode 0600); CLUSTERRA_URL and CLUSTERRA_TOKEN override it. "
        "Commands about a cluster take its id (or --cluster ID); without one they use the default set by "
        "`clusterra config set cluster ID`, or the one cluster you may use."
    )
)
WAIT_EPILOG = "exit codes:\n" + "\n".join(
    f"  {code:<6} {words}" for code, words in watch.WAIT_EXIT_CODES.items()
)
# A Slurm job id, or one task of an array job (123_4), passed to the URL as written.
_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")
# What the console's cluster ids are made of; anything else is taken as a cluster's name.
_CLUSTER_ID = re.compile(r"^[-a-zA-Z0-9_]+$")
_OPTION_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class UsageError(Exception):
    """Arguments that do not make one request; the message says what to give instead."""


def job_id(value: str) -> str:
    if not _JOB_ID.match(value):
        raise argparse.ArgumentTypeError(
            f"a job id is a number such as 123, or an array task such as 123_4, not {value!r}"
        )
    return value


def _cluster_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "cluster",
        nargs="?",
        help="the cluster's id, as `clusterra clusters` lists it (default: the one set by "
        "`clusterra config set cluster`, or the only one you may use)",
    )
    sub.add_argument("--cluster", dest="cluster_option", metavar="ID", help="the same, as an option")


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (`clusterra --json jobs …` or `… --json`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the console's address (env CLUSTERRA_URL, default {DEFAULT_URL})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON answer, for scripts",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="clusterra",
        description="Use a Slurm cluster through the Clusterra console.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"clusterra {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[common], **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    command("health", cmd_health, "is the console up, and is any part of it degraded?")
    login = command("login", cmd_login, "sign in: approve this computer in the browser, or give a token")
    login.add_argument(
        "--token", help="an API token made on the console's API tokens page ('-' reads it from stdin)"
    )
    login.add_argument(
        "--no-browser", action="store_true", help="print the approval link instead of opening it"
    )
    command("logout", cmd_logout, "forget the stored token")
    command("whoami", cmd_whoami, "who the token belongs to")
    command("clusters", cmd_clusters, "the clusters you may use")
    _cluster_arguments(
        command("partitions", cmd_partitions, "a cluster's partitions and what their nodes are doing")
    )
    _cluster_arguments(command("quota", cmd_quota, "your quotas and budgets on a cluster"))

    configure = commands.add_parser("config", help="the command's own settings: the default cluster")
    keys = configure.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    for name, handler, words in (
        ("set", cmd_config_set, "make a cluster (its id or name) the default for commands that take one"),
        ("get", cmd_config_get, "print the default cluster (exit 1 when none is set)"),
        ("unset", cmd_config_unset, "forget the default cluster"),
    ):
        sub = keys.add_parser(name, help=words, description=words, parents=[common])
        sub.set_defaults(handler=handler)
        sub.add_argument("key", choices=["cluster"])
        if name == "set":
            sub.add_argument("value", metavar="CLUSTER")

    job = commands.add_parser("job", help="submit, list, show, cancel jobs and read their output")
    jobs = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")

    def job_command(
        name: str, handler: Callable[..., int], help: str, **kwargs: Any
    ) -> argparse.ArgumentParser:
        sub = jobs.add_parser(name, help=help, description=help, parents=[common], **kwargs)
        sub.set_defaults(handler=handler)
        _cluster_arguments(sub)
        return sub

    submit = job_command(
        "submit", cmd_submit, "submit a script that is on the cluster, or send one (--script)"
    )
    submit.add_argument("script_path", nargs="?", help="absolute path of the script on the cluster")
    submit.add_argument(
        "--script-path", dest="script_path_option", metavar="PATH", help="the same, as an option"
    )
    submit.add_argument(
        "--script",
        metavar="FILE",
        help="send this file's text as the script instead ('-' reads standard input); "
        "give this or --script-path",
    )
    submit.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an sbatch long option, without its dashes (mem=4G; a flag alone: exclusive); repeatable",
    )
    submit.add_argument(
        "--hold",
        action="store_true",
        help="queue the job held: it stays PENDING until released (scontrol release ID)",
    )
    submit.add_argument("--partition", "-p")
    submit.add_argument("--time", "-t", help="minutes, or a Slurm time such as 1:30:00 or 2-00")
    submit.add_argument("--nodes", "-N", type=int)
    submit.add_argument("--cpus-per-task", "-c", type=int)
    submit.add_argument("--gpus", "-G", type=int, help="GPUs for the whole job")
    submit.add_argument("--name", "-J")
    submit.add_argument("--workdir", "-D", help="working directory (default: the script's folder)")
    submit.add_argument(
        "--dry-run", action="store_true", help="show the decision and the final job; queue nothing"
    )
    submit.add_argument(
        "--idempotency-key", help="reuse to make a retried submit safe (default: a new one per command)"
    )

    listing = job_command("list", cmd_list, "your jobs, newest first")
    listing.add_argument("--state", help="Slurm states, comma-separated, or active / finished")
    listing.add_argument("--partition")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--per-page", type=int, default=50)

    id_help = "the job's id, or an array task's (123_4)"
    job_command("show", cmd_show, "one job").add_argument("job_id", type=job_id, help=id_help)
    job_command("cancel", cmd_cancel, "cancel one of your jobs").add_argument(
        "job_id", type=job_id, help=id_help
    )
    waiting = job_command(
        "wait",
        cmd_wait,
        "wait until a job has ended, print how it ended, and exit with its exit code",
        epilog=WAIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    waiting.add_argument("job_id", type=job_id, help=id_help)
    waiting.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"give up after this long (exit {watch.WAIT_TIMED_OUT})",
    )
    out = job_command("output", cmd_output, "the last lines of a job's output, read as you on the cluster")
    out.add_argument("job_id", type=job_id, help=id_help)
    out.add_argument("--lines", "-n", type=int, default=50)
    out.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="like tail -f: print the output as it grows until the job ends (from its start if it has not)",
    )
    stream = out.add_mutually_exclusive_group()
    stream.add_argument("--stdout", dest="stream", action="store_const", const="stdout")
    stream.add_argument("--stderr", dest="stream", action="store_const", const="stderr")
    return parser


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"give a number of seconds, 0 or more, not {value!r}")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    settings = config.load(getattr(args, "url", None))
    try:
        return args.handler(args, settings)
    except UsageError as e:
        print(f"clusterra: {e}", file=sys.stderr)
        return USAGE
    except ApiFailure as e:
        if args.json and e.body is not None:
            _print_json(e.body)
        print(f"clusterra: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _client(settings: config.Settings) -> Client:
    return Client(settings.url, settings.token)


def _cluster(args: argparse.Namespace, settings: config.Settings, client: Client) -> str:
    """The cluster a command is about: the one named, else the default, else the only one the person has."""
    positional, option = getattr(args, "cluster", None), getattr(args, "cluster_option", None)
    if positional and option and positional != option:
        raise UsageError(f"two clusters named ({positional} and --cluster {option}): give one.")
    named = option or positional or settings.cluster
    if named:
        return named if _CLUSTER_ID.match(named) else _cluster_called(named, client)
    usable = client.get("/clusters")["clusters"]
    if len(usable) == 1:
        return usable[0]["id"]
    if not usable:
        raise ApiFailure(DENIED, "You may use no cluster yet: ask the console's administrators for a grant.")
    ids = ", ".join(c["id"] for c in usable)
    raise UsageError(
        f"you may use {len(usable)} clusters ({ids}): name one (--cluster ID), "
        "or set a default (clusterra config set cluster ID)."
    )


def _cluster_called(name: str, client: Client) -> str:
    """The id of the person's cluster with this id or name (case does not matter)."""
    usable = client.get("/clusters")["clusters"]
    for cluster in usable:
        if name.casefold() in (cluster["id"].casefold(), cluster["name"].casefold()):
            return cluster["id"]
    ids = ", ".join(f"{c['id']} ({c['name']})" for c in usable) or "none"
    raise ApiFailure(NOT_FOUND, f"You may use no cluster called {name!r}; yours: {ids}.")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


# --- commands -----------------------------------------------------------------------------------


def cmd_health(args: argparse.Namespace, settings: config.Settings) -> int:
    url = settings.url
    try:
        answer = requests.get(f"{url}/healthz", timeout=30)
        body = answer.json()
    except requests.RequestException as e:
        print(f"clusterra: the console at {url} does not answer: {e}", file=sys.stderr)
        return UNREACHABLE
    except ValueError:
        print(
            f"clusterra: {url} answered, but not like a Clusterra console (HTTP {answer.status_code}).",
            file=sys.stderr,
        )
        return UNREACHABLE
    if args.json:
        _print_json(body)
        return OK if body.get("ok") else 1
    # /healthz gives its details to staff only; anyone else is told up or down, and what is degraded.
    degraded = ", ".join(body.get("degraded", []))
    print(
        f"console  {'ok' if body.get('ok') else 'DOWN'}" + (f"  (degraded: {degraded})" if degraded else "")
    )
    return OK if body.get("ok") else 1


def cmd_login(args: argparse.Namespace, settings: config.Settings) -> int:
    url = getattr(args, "url", None) or os.environ.get("CLUSTERRA_URL") or settings.url
    from_stdin = args.token == "-"  # noqa: S105 - "-" means standard input, as for most commands
    token = sys.stdin.readline().strip() if from_stdin else args.token
    if not token:
        try:
            token = browser_login(
                url, open_browser=not args.no_browser, say=lambda s: print(s, file=sys.stderr)
            )
        except LoginFailed as e:
            print(f"clusterra: {e}", file=sys.stderr)
            return 3
    me = Client(url, token).get("/me")
    path = config.save(url, token)
    if args.json:
        _print_json(me)
    else:
        print(f"Signed in to {url} as {me['username']}; the token is in {path}.")
    return OK


def cmd_logout(args: argparse.Namespace, settings: config.Settings) -> int:
    removed = config.forget()
    if not args.json:
        print("Signed out: the stored token is forgotten." if removed else "There was no stored token.")
    return OK


def cmd_whoami(args: argparse.Namespace, settings: config.Settings) -> int:
    me = _client(settings).get("/me")
    if args.json:
        _print_json(me)
        return OK
    account = me.get("posix_account")
    posix = f", POSIX user {account['username']} (uid {account['uid']})" if account else ""
    print(f"{me['username']} <{me['email']}>{posix}; clusters: {', '.join(me['clusters']) or 'none'}")
    return OK


def cmd_clusters(args: argparse.Namespace, settings: config.Settings) -> int:
    body = _client(settings).get("/clusters")
    if args.json:
        _print_json(body)
        return OK
    rows = [[c["id"], c["name"], ", ".join(c["granted_partitions"]) or "-"] for c in body["clusters"]]
    print(table(rows, ["ID", "NAME", "YOUR PARTITIONS"]) if rows else "You may use no cluster yet.")
    return OK


def cmd_partitions(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    body = client.get(f"/clusters/{_cluster(args, settings, client)}/partitions")
    if args.json:
        _print_json(body)
        return OK
    rows = []
    for p in body["partitions"]:
        limit = "unlimited" if p["max_time_limit"] is None else f"{p['max_time_limit']} min"
        rows.append(
            [
                p["name"] + ("*" if p["default"] else ""),
                p["state"],
                f"{p['nodes']['idle']}/{p['nodes']['allocated']}/{p['nodes']['total']}",
                f"{p['cpus']['idle']}/{p['cpus']['total']}",
                f"{p['gpus']['idle']}/{p['gpus']['allocated']}",
                limit,
                "yes" if p["granted"] else "no",
            ]
        )
    print(table(rows, ["PARTITION", "STATE", "NODES I/A/T", "CPUS I/T", "GPUS I/A", "MAX TIME", "YOURS"]))
    return OK


def cmd_quota(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    cluster = _cluster(args, settings, client)
    body = client.get(f"/clusters/{cluster}/quota")
    if args.json:
        _print_json(body)
        return OK
    if not body["quotas"]:
        print(f"No quota applies to you on {cluster}.")
        return OK
    for q in body["quotas"]:
        print(f"{q['scope']}, per {q['period']}, renews {q['renews'][:10]}")
        for kind in ("gpu", "cpu"):
            if q[f"{kind}_hours_limit"] is not None:
                print(
                    f"  {kind.upper()}-hours: {q[f'{kind}_hours_used']:.1f} used, "
                    f"{q[f'{kind}_hours_reserved']:.1f} reserved, {q[f'{kind}_hours_left']:.1f} left "
                    f"of {q[f'{kind}_hours_limit']:.1f}"
                )
        for label, now, limit in (
            ("running jobs", q["running_jobs"], q["max_running_jobs"]),
            ("queued jobs", q["queued_jobs"], q["max_queued_jobs"]),
        ):
            if limit is not None:
                print(f"  {label}: {now} of {limit}")
    return OK


def cmd_config_set(args: argparse.Namespace, settings: config.Settings) -> int:
    value = args.value.strip()
    try:
        # Kept by id, checked against the clusters the person may use: the URLs need the id, not the name.
        cluster = _cluster_called(value, _client(settings))
    except ApiFailure as e:
        if e.exit_code not in (NOT_SIGNED_IN, UNREACHABLE) or not _CLUSTER_ID.match(value):
            raise
        # Not signed in yet, or the console is away: the first command that uses it checks it.
        _say(f"kept {value} without checking it: {e.message}")
        cluster = value
    try:
        path = config.set_cluster(settings.url, cluster)
    except config.OtherConsole as e:
        raise UsageError(str(e)) from None
    if args.json:
        _print_json({"cluster": cluster})
    else:
        print(f"Default cluster: {cluster} (in {path}).")
    return OK


def cmd_config_get(args: argparse.Namespace, settings: config.Settings) -> int:
    if args.json:
        _print_json({"cluster": settings.cluster or None})
    elif settings.cluster:
        print(settings.cluster)
    else:
        print(f"No default cluster is set for {settings.url}.", file=sys.stderr)
    # As `git config --get`: 1 when there is nothing, so a script can test it.
    return OK if settings.cluster else 1


def cmd_config_unset(args: argparse.Namespace, settings: config.Settings) -> int:
    if settings.cluster:
        try:
            config.set_cluster(settings.url, None)
        except config.OtherConsole as e:
            raise UsageError(str(e)) from None
    if not args.json:
        print(
            f"Forgot the default cluster {settings.cluster}."
            if settings.cluster
            else "No default cluster was set."
        )
    return OK


def _script_body(args: argparse.Namespace) -> dict[str, Any]:
    """`script_path` or `script`: exactly one, from the arguments."""
    if args.cluster and "/" in args.cluster and not args.script_path:
        # `clusterra job submit /fsx/job.sh`: a cluster id has no slash, so this is the script.
        args.script_path, args.cluster = args.cluster, None
    if args.script_path and args.script_path_option and args.script_path != args.script_path_option:
        raise UsageError(
            f"two script paths given ({args.script_path} and --script-path {args.script_path_option})."
        )
    path = args.script_path_option or args.script_path
    if path and args.script is not None:
        raise UsageError("give --script-path (a file on the cluster) or --script (sent from here), not both.")
    if path:
        return {"script_path": path}
    if args.script is None:
        raise UsageError(
            "give the script: --script-path PATH for a file on the cluster, "
            "or --script FILE to send one from here ('-' reads standard input)."
        )
    return {"script": _read_script(args.script)}


def _read_script(name: str) -> str:
    where = "standard input" if name == "-" else name
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--script {where} is not UTF-8 text.") from None
    except OSError as e:
        raise UsageError(f"--script {where}: {e.strerror or e}.") from None
    if not text.strip():
        raise UsageError(f"--script {where} is empty.")
    return text


def _sbatch_options(pairs: list[str], hold: bool) -> dict[str, str | bool]:
    """`--option NAME=VALUE` / `--option NAME` and `--hold` as the request's `options` object."""
    options: dict[str, str | bool] = {}
    for pair in pairs:
        name, has_value, value = pair.partition("=")
        # `--option=--mem=4G` means what `--option mem=4G` does.
        name = name.strip().removeprefix("--")
        if not _OPTION_NAME.match(name):
            raise UsageError(
                f"--option {pair!r}: give an sbatch long option as NAME=VALUE (mem=4G), "
                "or NAME alone for a flag (exclusive)."
            )
        if name in options:
            raise UsageError(f"--option {name} is given twice.")
        options[name] = value if has_value else True
    if hold:
        if "hold" in options:
            raise UsageError("--hold and --option hold say the same thing: give one.")
        options["hold"] = True
    return options


def cmd_submit(args: argparse.Namespace, settings: config.Settings) -> int:
    body = _script_body(args)
    options = _sbatch_options(args.option, args.hold)
    optional = {
        "partition": args.partition,
        "time_limit": args.time,
        "nodes": args.nodes,
        "cpus_per_task": args.cpus_per_task,
        "gpus": args.gpus,
        "name": args.name,
        "working_directory": args.workdir,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if options:
        body["options"] = options
    if isinstance(body.get("time_limit"), str) and body["time_limit"].isdigit():
        body["time_limit"] = int(body["time_limit"])
    client = _client(settings)
    cluster = _cluster(args, settings, client)
    # One key per command: the retry below (or a re-run with --idempotency-key) never queues twice.
    key = args.idempotency_key or str(uuid.uuid4())
    _, answer = client.request(
        "POST",
        f"/clusters/{cluster}/jobs",
        params={"dry_run": "1" if args.dry_run else None},
        body=body,
        headers={"Idempotency-Key": key},
        retry=True,
    )
    if args.json:
        _print_json(answer)
        return OK
    print(answer["decision"]["message"])
    final = answer.get("final_job") or {}
    if args.dry_run:
        print("Dry run: nothing was queued. The job would be:")
    for name in ("name", "partition", "time_limit", "nodes", "cpus", "gpus", "working_directory"):
        if final.get(name) is not None:
            source = final.get("sources", {}).get(name, "")
            print(f"  {name:<18} {final[name]}" + (f"  ({source})" if source else ""))
    cost = answer.get("cost") or {}
    if cost:
        print(f"  {'budget cost':<18} {cost['gpu_hours']} GPU-hours, {cost['cpu_hours']} CPU-hours")
    for warning in answer.get("warnings", []):
        print(f"Slurm said: {warning}")
    if "job" in answer and not answer["replayed"]:
        # A replay's decision sentence already names the job.
        print(f"Submitted job {answer['job']['id']}.")
    return OK


def cmd_list(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    body = client.get(
        f"/clusters/{_cluster(args, settings, client)}/jobs",
        state=args.state,
        partition=args.partition,
        page=args.page,
        per_page=args.per_page,
    )
    if args.json:
        _print_json(body)
        return OK
    rows = [
        [
            j["id"],
            j["name"],
            j["partition"],
            j["state"],
            j["reason"],
            j["elapsed"],
            j["nodes"],
            j["cpus"],
            j["gpus"],
        ]
        for j in body["jobs"]
    ]
    if rows:
        print(table(rows, ["JOBID", "NAME", "PARTITION", "STATE", "REASON", "TIME", "NODES", "CPUS", "GPUS"]))
    print(f"{body['total']} job{'s' if body['total'] != 1 else ''}; page {body['page']} of {body['pages']}.")
    return OK


def _show(job: dict[str, Any]) -> None:
    fields = [
        ("job", f"{job['id']} ({job['name']})"),
        ("state", job["state"] + (f" — {job['state_text']}" if job["state_text"] else "")),
        (
            "reason",
            job["reason"] + (f" — {job['reason_text']}" if job["reason_text"] != job["reason"] else ""),
        ),
        ("user", job["user"]),
        ("partition", job["partition"]),
        ("submitted", job["submit_time"]),
        ("started", job["start_time"]),
        ("ended", job["end_time"]),
        ("elapsed", job["elapsed"]),
        ("time limit", f"{job['time_limit']} min" if job["time_limit"] else ""),
        ("nodes", f"{job['nodes']} {job['node_list']}".strip()),
        ("cpus / gpus", f"{job['cpus']} / {job['gpus']}"),
        ("exit code", _exit_words(job)),
        ("script", job["script_path"]),
        ("working dir", job["working_directory"]),
        ("stdout", job["stdout_path"]),
        ("stderr", job["stderr_path"]),
    ]
    for label, value in fields:
        if value not in (None, "", "—"):
            print(f"{label:<12} {value}")


def _exit_words(job: dict[str, Any]) -> str:
    if job["exit_code"] is not None:
        return str(job["exit_code"])
    return f"killed by signal {job['exit_signal']}" if job["exit_signal"] else ""


def cmd_show(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    body = client.get(f"/clusters/{_cluster(args, settings, client)}/jobs/{args.job_id}")
    if args.json:
        _print_json(body)
        return OK
    _show(body["job"])
    if body.get("note"):
        print(body["note"])
    return OK


def cmd_cancel(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    _, body = client.request("DELETE", f"/clusters/{_cluster(args, settings, client)}/jobs/{args.job_id}")
    if args.json:
        _print_json(body)
        return OK
    print(f"{body['message']} Slurm now says {body['job']['state']}.")
    return OK


def _say(words: str) -> None:
    print(f"clusterra: {words}", file=sys.stderr, flush=True)


def _job_or_unstarted_task(client: Client, jobs: str, job_id: str) -> dict[str, Any] | None:
    """The job's answer, or None for an array task Slurm still holds in its array (it has not started).

    Such a task has no job of its own yet, so the console answers 404 for it; while the array has
    not ended the task is still to come. Reading the array also brings its tasks up to date.
    """
    try:
        return client.get(f"{jobs}/{job_id}")
    except ApiFailure as e:
        if e.exit_code != NOT_FOUND or "_" not in job_id:
            raise
        array = client.get(f"{jobs}/{job_id.split('_')[0]}")["job"]
        try:
            return client.get(f"{jobs}/{job_id}")
        except ApiFailure as again:
            if again.exit_code != NOT_FOUND or watch.has_ended(array):
                raise
        return None


def cmd_wait(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    jobs = f"/clusters/{_cluster(args, settings, client)}/jobs"
    poller = watch.Poller(args.timeout, say=_say)
    body: dict[str, Any] | None = None
    last = ""
    try:
        while True:
            body = poller.ask(lambda: _job_or_unstarted_task(client, jobs, args.job_id))
            job = body["job"] if body else {"state": "PENDING", "reason": "not started by the array yet"}
            if watch.has_ended(job):
                break
            # Progress goes to stderr: stdout holds only the final line (or the JSON), for scripts.
            now = job["state"] + (f" ({job['reason']})" if job.get("reason") else "")
            if now != last and not args.json:
                _say(f"job {args.job_id} is {now}; waiting.")
            last = now
            poller.wait()
    except watch.TimeUp:
        if args.json and body:
            _print_json(body)
        seen = f" (last seen {last})" if last else ""
        _say(f"job {args.job_id} has not ended after {args.timeout:g} s{seen}; it goes on.")
        return watch.WAIT_TIMED_OUT
    if args.json:
        _print_json(body)
    else:
        how = _exit_words(job)
        how = f"exit code {how}" if how.isdigit() else how
        print(f"Job {args.job_id} ended {job['state']}" + (f", {how}." if how else "."))
    return watch.exit_status(job)


def cmd_output(args: argparse.Namespace, settings: config.Settings) -> int:
    client = _client(settings)
    jobs = f"/clusters/{_cluster(args, settings, client)}/jobs"
    if args.follow:
        if args.json:
            raise UsageError("--follow prints the output as it grows; --json is for one answer.")
        return _follow(client, jobs, args)
    body = client.get(f"{jobs}/{args.job_id}/output", lines=args.lines, stream=args.stream or "both")
    if args.json:
        _print_json(body)
        return OK
    for name, stream in _streams(body):
        if stream["error"]:
            print(f"clusterra: {name}: {stream['error']}", file=sys.stderr)
            continue
        _write(name, stream["text"])
    return OK


def _streams(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The streams an output answer holds, stderr left out when it is the stdout file again."""
    found = []
    for name in ("stdout", "stderr"):
        stream = body.get(name)
        if stream is None or (name == "stderr" and stream.get("same_as_stdout") and "stdout" in body):
            continue
        found.append((name, stream))
    return found


def _write(name: str, text: str) -> None:
    target = sys.stdout if name == "stdout" else sys.stderr
    target.write(text)
    target.flush()


# The most lines one output answer holds: the longer the window, the surer the new part is found in it.
FOLLOW_LINES = 2000
# An error is shown once it is the same three reads running (a file not there yet is, for a moment).
ERROR_READS = 3


def _follow(client: Client, jobs: str, args: argparse.Namespace) -> int:
    """Print the job's output as it grows until the job has ended, then the rest (`tail -f`)."""
    poller = watch.Poller(longest=5.0, say=_say)
    followers: dict[str, watch.Follower] = {}
    errors: dict[str, tuple[str, int]] = {}
    shown: set[tuple[str, str]] = set()
    started_here = False
    while True:
        body = poller.ask(lambda: _job_or_unstarted_task(client, jobs, args.job_id))
        job = body["job"] if body else {"state": "PENDING", "start_time": None}
        ended = watch.has_ended(job)
        if not job.get("start_time") and not ended:
            # Nothing to read before it starts; then all of it is new to the person watching.
            started_here = True
            poller.wait()
            continue
        body = poller.ask(
            lambda: client.get(
                f"{jobs}/{args.job_id}/output", lines=FOLLOW_LINES, stream=args.stream or "both"
            )
        )
        grew = False
        for name, stream in _streams(body):
            if stream["error"]:
                error, times = errors.get(name, ("", 0))
                errors[name] = (stream["error"], times + 1 if error == stream["error"] else 1)
                continue
            errors.pop(name, None)
            follower = followers.setdefault(name, watch.Follower(None if started_here else args.lines))
            text = stream["text"]
            whole = not stream["truncated"] and len(text.splitlines()) < FOLLOW_LINES
            new = follower.feed(text, whole=whole)
            if follower.skipped:
                _say(f"{name}: part of the output went by faster than it could be read; going on from here.")
            if new:
                _write(name, new)
                grew = True
        for name, (error, times) in errors.items():
            if (times >= ERROR_READS or ended) and (name, error) not in shown:
                shown.add((name, error))
                _say(f"{name}: {error}")
        if ended:
            return OK
        if grew:
            poller.again_soon()
        poller.wait()


if __name__ == "__main__":
    sys.exit(main())
