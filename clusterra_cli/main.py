"""Entry point of the `clusterra` command: the console's /v1 API from a terminal, tables or --json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import requests

from clusterra_cli import __version__, config
from clusterra_cli.client import EXIT_CODES, OK, UNREACHABLE, ApiFailure, Client
from clusterra_cli.login import LoginFailed, browser_login

DEFAULT_URL = config.DEFAULT_URL

EPILOG = (
    "exit codes:\n"
    + "\n".join(f"  {code}  {words}" for code, words in EXIT_CODES.items())
    + (
        "\n\nconfiguration: `clusterra login` writes the console's URL and your API token to "
        "~/.config/clusterra/config.json (mode 0600); CLUSTERRA_URL and CLUSTERRA_TOKEN override it."
    )
)


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
    command(
        "partitions", cmd_partitions, "a cluster's partitions and what their nodes are doing"
    ).add_argument("cluster")
    command("quota", cmd_quota, "your quotas and budgets on a cluster").add_argument("cluster")

    job = commands.add_parser("job", help="submit, list, show, cancel jobs and read their output")
    jobs = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")

    def job_command(name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sub = jobs.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(handler=handler)
        sub.add_argument("cluster", help="the cluster's id, as `clusterra clusters` lists it")
        return sub

    submit = job_command("submit", cmd_submit, "submit a script that is on the cluster")
    submit.add_argument("script_path", nargs="?", help="absolute path of the script on the cluster")
    submit.add_argument(
        "--script-path", dest="script_path_option", metavar="PATH", help="the same, as an option"
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

    job_command("show", cmd_show, "one job").add_argument("job_id", type=int)
    job_command("cancel", cmd_cancel, "cancel one of your jobs").add_argument("job_id", type=int)
    out = job_command("output", cmd_output, "the last lines of a job's output, read as you on the cluster")
    out.add_argument("job_id", type=int)
    out.add_argument("--lines", "-n", type=int, default=50)
    stream = out.add_mutually_exclusive_group()
    stream.add_argument("--stdout", dest="stream", action="store_const", const="stdout")
    stream.add_argument("--stderr", dest="stream", action="store_const", const="stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    settings = config.load(getattr(args, "url", None))
    try:
        return args.handler(args, settings)
    except ApiFailure as e:
        if args.json and e.body is not None:
            _print_json(e.body)
        print(f"clusterra: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def _client(settings: config.Settings) -> Client:
    return Client(settings.url, settings.token)


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
    body = _client(settings).get(f"/clusters/{args.cluster}/partitions")
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
    body = _client(settings).get(f"/clusters/{args.cluster}/quota")
    if args.json:
        _print_json(body)
        return OK
    if not body["quotas"]:
        print(f"No quota applies to you on {args.cluster}.")
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


def cmd_submit(args: argparse.Namespace, settings: config.Settings) -> int:
    script = args.script_path_option or args.script_path
    if not script:
        print(
            "clusterra: give the script's path (clusterra job submit CLUSTER /path/to/job.sh).",
            file=sys.stderr,
        )
        return 2
    body: dict[str, Any] = {"script_path": script}
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
    if isinstance(body.get("time_limit"), str) and body["time_limit"].isdigit():
        body["time_limit"] = int(body["time_limit"])
    # One key per command: the retry below (or a re-run with --idempotency-key) never queues twice.
    key = args.idempotency_key or str(uuid.uuid4())
    _, answer = _client(settings).request(
        "POST",
        f"/clusters/{args.cluster}/jobs",
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
    body = _client(settings).get(
        f"/clusters/{args.cluster}/jobs",
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
    body = _client(settings).get(f"/clusters/{args.cluster}/jobs/{args.job_id}")
    if args.json:
        _print_json(body)
        return OK
    _show(body["job"])
    if body.get("note"):
        print(body["note"])
    return OK


def cmd_cancel(args: argparse.Namespace, settings: config.Settings) -> int:
    _, body = _client(settings).request("DELETE", f"/clusters/{args.cluster}/jobs/{args.job_id}")
    if args.json:
        _print_json(body)
        return OK
    print(f"{body['message']} Slurm now says {body['job']['state']}.")
    return OK


def cmd_output(args: argparse.Namespace, settings: config.Settings) -> int:
    body = _client(settings).get(
        f"/clusters/{args.cluster}/jobs/{args.job_id}/output", lines=args.lines, stream=args.stream or "both"
    )
    if args.json:
        _print_json(body)
        return OK
    for name in ("stdout", "stderr"):
        stream = body.get(name)
        if stream is None or (name == "stderr" and stream.get("same_as_stdout") and "stdout" in body):
            continue
        if stream["error"]:
            print(f"clusterra: {name}: {stream['error']}", file=sys.stderr)
            continue
        target = sys.stdout if name == "stdout" else sys.stderr
        target.write(stream["text"])
        target.flush()
    return OK


if __name__ == "__main__":
    sys.exit(main())
