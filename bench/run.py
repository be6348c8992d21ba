"""`make bench`: eight benchmarks against a live console and their raw baselines, one table, one JSON file.

    python -m bench.run            full run (several minutes; 10,000 queued jobs, 2,000 terminals)
    python -m bench.run --smoke    seconds, small sizes: CI runs it so the benchmarks never rot (rows 1-5;
                                   `--smoke --only 6` for row 6)
    python -m bench.run --only 7   submit on each Slurm release that is up (22.05, 24.11, 26.05)
    python -m bench.run --only 8   the mixed load of 48 signed-in people, against a do-nothing view

Needs root on the machine that runs scripts/slurm-up.sh's Slurm (it provisions a Linux user,
starts login shells as that user and parks jobs in a partition of its own), PostgreSQL, and
Redis if there is one. See bench/README.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

if not __package__:
    # `python bench/run.py` works too: the repository root must be importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import console as stage
from bench import quiet, raw_slurm
from bench.stats import Row, table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# Machine-wide: every run uses the same database, Slurm partition, Linux user and data folder.
LOCK = Path("/run/lock/clusterra-bench.lock")


@dataclass(frozen=True)
class Plan:
    """How big each benchmark is in one mode."""

    submit_count: int
    submit_warmup: int
    queue_jobs: int
    queue_rounds: int
    queue_per_round: int
    echo_keys: int
    echo_warmup: int
    fanout_sessions: int
    fanout_seconds: float
    fanout_interval: float
    policy_people: int
    policy_seconds: float
    plugin_blocks: int
    plugin_per_block: int
    plugin_warmup: int
    load_clients: int
    load_seconds: float
    load_rounds: int
    # Row 8 on these ASGI servers too, each a process of its own on the same database (daphne,uvicorn,…).
    load_servers: str
    # Seconds of each kind of request alone after the mixed turns, for the CPU each costs (0: none).
    load_by_route: float
    # A folder: py-spy records the console's worker during each by-route turn, one file per kind (GIL holder
    # only, so the samples are CPU, not waiting); bench.profile summarises them. Empty: no profile.
    load_profile: str


PLANS = {
    "full": Plan(
        submit_count=300,
        submit_warmup=10,
        queue_jobs=10_000,
        queue_rounds=15,
        queue_per_round=10,
        echo_keys=1000,
        echo_warmup=50,
        fanout_sessions=2000,
        fanout_seconds=30.0,
        fanout_interval=0.5,
        policy_people=10_000,
        policy_seconds=15.0,
        plugin_blocks=24,
        plugin_per_block=25,
        plugin_warmup=3,
        load_clients=48,
        load_seconds=10.0,
        load_rounds=2,
        load_servers="",
        load_by_route=0.0,
        load_profile="",
    ),
    "smoke": Plan(
        submit_count=8,
        submit_warmup=2,
        queue_jobs=200,
        queue_rounds=2,
        queue_per_round=3,
        echo_keys=20,
        echo_warmup=5,
        fanout_sessions=10,
        fanout_seconds=1.0,
        fanout_interval=0.2,
        policy_people=300,
        policy_seconds=0.3,
        plugin_blocks=2,
        plugin_per_block=5,
        plugin_warmup=1,
        load_clients=8,
        load_seconds=1.0,
        load_rounds=2,
        load_servers="",
        load_by_route=0.0,
        load_profile="",
    ),
}
# Quiet work first: echo, then the job_submit plugin while slurmctld holds few jobs (the console's script
# reads all of them on every submit) and before row 1's leave any behind, the submits on each release before
# row 2 queues its 10,000 jobs (the mixed load's people look at their own jobs: before those too), the
# 2,000 shells of the fan-out last.
ORDER = (3, 6, 1, 7, 8, 2, 5, 4)
# A full run waits before each row until others' work has stayed under QUIET_SHARE this long (or gives up).
QUIET_SPELL = 15.0
QUIET_LIMIT = 300.0
# How many times a full run measures a row again when others' work landed in the middle of it.
RETRIES = 2


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, a few seconds (for CI)")
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="where the JSON goes (default: bench/results/ for a full run, a temporary folder for --smoke)",
    )
    parser.add_argument("--only", default="", help="comma-separated row numbers to run, e.g. 1,3")
    parser.add_argument("--keep-db", action="store_true", help="keep the bench database afterwards")
    parser.add_argument(
        "--wait-lock",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long to wait for another benchmark run on this machine to finish (default 3600)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_LIMIT,
        metavar="SECONDS",
        help=f"how long a full run waits for a quiet machine before each row (default {QUIET_LIMIT:g}); "
        "0 measures at once and never again: for A/B runs on a busy machine, where the ratios "
        "(both sides measured turn by turn) are what count",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one size of the mode's plan, e.g. --set fanout_sessions=100 (repeatable)",
    )
    return parser.parse_args(argv)


def _plan(mode: str, changes: list[str]) -> Plan:
    plan = PLANS[mode]
    for change in changes:
        name, _, value = change.partition("=")
        current = getattr(plan, name.strip(), None)
        if current is None or not value:
            raise SystemExit(f"bench: --set {change!r}: the plan has {', '.join(asdict(plan))}")
        plan = replace(plan, **{name.strip(): type(current)(value)})
    return plan


def _hold_the_lock(wait: float) -> IO[str] | None:
    """The machine-wide benchmark lock, or None if another run still holds it after `wait` seconds.

    Two runs at once would drop each other's database and partition (the smoke test runs inside
    the test suite, which may start while a full run is going), so the second one waits its turn.
    """
    handle = LOCK.open("a+")
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                return None
            if not announced:
                handle.seek(0)
                say(f"another benchmark run ({handle.read().strip() or 'unknown'}) holds {LOCK}; waiting")
                announced = True
            time.sleep(2)
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {datetime.now(UTC):%H:%M:%S} UTC\n")
        handle.flush()
        return handle


def _refusal() -> str:
    if os.geteuid() != 0:
        return "run as root: the benchmarks provision a Linux user and start login shells as that user"
    if not raw_slurm.ENV_FILE.exists():
        return f"no {raw_slurm.ENV_FILE}: start the local Slurm first (scripts/slurm-up.sh, or make slurm-up)"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    mode = "smoke" if args.smoke else "full"
    plan = _plan(mode, args.set)
    refusal = _refusal()
    if refusal:
        print(f"bench: {refusal}", file=sys.stderr)
        return 2
    lock = _hold_the_lock(args.wait_lock)
    if lock is None:
        print(f"bench: another benchmark run still holds {LOCK} after {args.wait_lock:g} s", file=sys.stderr)
        return 3
    only = {int(n) for n in args.only.split(",") if n.strip()} or set(ORDER)
    results_dir = args.results_dir or (
        RESULTS if mode == "full" else Path(tempfile.gettempdir()) / "clusterra-bench"
    )
    began = time.monotonic()
    started_at = datetime.now(UTC)

    settings = stage.Settings.from_environment()
    os.environ.update(settings.environment())
    # Private, or the console refuses it; data/ above the default one is `make demo`'s data folder, which
    # would otherwise be made 0755 here, and refused there.
    for folder in (settings.data_dir.parent, settings.data_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    python = sys.executable
    layer = settings.redis_url or "in-memory"
    say(f"{mode} run; console database {settings.database_url}, channel layer {layer}")
    stage.prepare_database(settings, python)
    stage.collect_static(settings, python)

    import django

    django.setup()
    _log_to_file(settings.data_dir / "driver.log")
    from bench import echo, fanout, job_list, job_submit, machine, policy, releases, submit
    from bench.ssm_host import SsmHost
    from tests.support.slurm_shell import restore_policy, save_policy

    if job_submit.restore_if_left():
        say(f"a killed run had left row 6's pass-through in {job_submit.INSTALLED}; the plugin is back")
    site = raw_slurm.SlurmSite.read()
    accounting = "SLURM_ACCOUNTING=0" not in raw_slurm.ENV_FILE.read_text()
    # The bench publishes its own policy to the machine's Slurm; whatever was there (a demo's) comes back.
    policy_before = save_policy()
    cast = stage.cast(site.url, site.api_version, site.key_file, accounting)
    raw = raw_slurm.RawSlurm(site, cast.posix_user)
    description = machine.describe(
        slurm=raw_slurm.slurm_release(),
        database=machine.database_description(),
        channel_layer=machine.channel_layer_description(settings.redis_url),
    )
    ssm = SsmHost(python, settings.data_dir / "ssm_host.log")
    console: stage.Server | None = None
    submitted: list[int] = []
    rows: list[Row] = []
    setup_seconds = 0.0
    try:
        raw_slurm.create_parking()
        ssm.start()
        # This process drives the SSM transport directly too (row 3), through the same stand-in.
        os.environ.update(ssm.console_env())
        console = stage.Server(
            python, settings.environment() | ssm.console_env(), settings.data_dir / "server.log"
        )
        console.start()
        say(f"console on {console.base_url} ({console.kind}, pid {console.pid}); SSM stand-in pid {ssm.pid}")
        setup_seconds = time.monotonic() - began
        url = console.base_url
        server = console
        benchmarks: dict[int, tuple[str, Callable[[], Row]]] = {
            1: (
                "submit",
                lambda: submit.run(
                    url,
                    cast.api_token,
                    cast.script_path,
                    stage.SCRIPT_TEXT,
                    raw,
                    count=plan.submit_count,
                    warmup=plan.submit_warmup,
                    submitted=submitted,
                    server=server.kind,
                ),
            ),
            2: (
                "queue",
                lambda: job_list.run(
                    url,
                    cast.api_token,
                    cast.session_cookie,
                    stage.PERSON_EMAIL,
                    stage.SCRIPT_TEXT,
                    cast.script_path.rpartition("/")[0],
                    raw,
                    jobs=plan.queue_jobs,
                    rounds=plan.queue_rounds,
                    per_round=plan.queue_per_round,
                    submitted=submitted,
                ),
            ),
            3: (
                "terminal echo",
                lambda: echo.run(
                    url,
                    cast.session_cookie,
                    cast.posix_user,
                    str(cast.home),
                    (cast.local_cluster, cast.ssm_cluster),
                    keys=plan.echo_keys,
                    warmup=plan.echo_warmup,
                ),
            ),
            4: (
                "terminal fan-out",
                lambda: fanout.run(
                    url,
                    cast.session_cookie,
                    cast.posix_user,
                    str(cast.home),
                    server,
                    sessions=plan.fanout_sessions,
                    seconds=plan.fanout_seconds,
                    interval=plan.fanout_interval,
                ),
            ),
            5: (
                "policy",
                lambda: policy.run(
                    cast.local_cluster, cast.person, people=plan.policy_people, seconds=plan.policy_seconds
                ),
            ),
            7: (
                "submit on each release",
                lambda: releases.run(
                    url,
                    cast.api_token,
                    cast,
                    stage.SCRIPT_TEXT,
                    raw,
                    count=plan.submit_count,
                    warmup=plan.submit_warmup,
                    submitted=submitted,
                ),
            ),
            8: ("mixed load", lambda: _mixed_load(server, cast, raw, plan, python, settings, submitted)),
            6: (
                "job_submit plugin",
                lambda: job_submit.run(
                    raw,
                    stage.SCRIPT_TEXT,
                    cast.script_path.rpartition("/")[0],
                    blocks=plan.plugin_blocks,
                    per_block=plan.plugin_per_block,
                    warmup=plan.plugin_warmup,
                    submitted=submitted,
                ),
            ),
        }
        for number in ORDER:
            if number not in only:
                continue
            name, measure = benchmarks[number]
            waited: dict[str, Any] = {}
            patient = mode == "full" and args.quiet_wait > 0
            if patient:
                say(f"row {number}: waiting for the machine to be quiet (others' work skews the tails)…")
                waited = quiet.wait_for_quiet(QUIET_SPELL, args.quiet_wait)
            discarded: list[dict[str, Any]] = []
            while True:
                say(f"row {number}: {name}…")
                begun = time.monotonic()
                with quiet.Watch() as watch:
                    try:
                        row = measure()
                    except Exception as e:
                        traceback.print_exc()
                        row = Row(number, name, error=f"{type(e).__name__}: {e}")
                row.seconds = time.monotonic() - begun
                load = watch.load.summary()
                busy = load["cpu_share"].get("foreign", 0.0) > quiet.QUIET_SHARE
                if not patient or row.error or not busy or len(discarded) >= RETRIES:
                    break
                # Someone else's work landed in the middle of the row: measure it again after a quiet spell.
                discarded.append(load)
                say(
                    f"row {number}: others used {load['cpu_share']['foreign']:.2f} of a core meanwhile; again"
                )
                waited = quiet.wait_for_quiet(QUIET_SPELL, args.quiet_wait)
            row.info["machine_load"] = load | ({"quiet_before": waited} if waited else {})
            if discarded:
                row.info["discarded_attempts"] = discarded
            rows.append(row)
            say(f"row {number}: done in {row.seconds:.1f} s")
    finally:
        restore_policy(policy_before)
        left = raw_slurm.remove_parking(submitted)
        if left:
            say(f"cancelled {left} more jobs left in the parking partition")
        raw.close()
        if console is not None:
            console.stop()
        ssm.stop()
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            stage.drop_database(settings)

    rows.sort(key=lambda r: r.number)
    print()
    print(table(rows))
    for row in rows:
        for remark in row.remarks:
            print(remark)
    for row in rows:
        load = row.info.get("machine_load", {})
        share = load.get("cpu_share", {}).get("foreign", 0.0)
        if share > quiet.QUIET_SHARE:
            print(
                f"note: row {row.number} shared the machine: other work used {share:.2f} of a core "
                f"on average ({', '.join(load.get('foreign_top', {}))})"
            )
    print()
    result = {
        "schema": 1,
        "mode": mode,
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - began, 1),
        "setup_seconds": round(setup_seconds, 1),
        "plan": asdict(plan),
        "machine": description,
        "quiet_wait_s": args.quiet_wait if mode == "full" else 0,
        "rows": [row.as_json() for row in rows],
    }
    path = write_results(result, results_dir, mode, started_at)
    print(f"results: {path}")
    print(f"{mode} run took {result['seconds']:.1f} s")
    return 1 if any(row.error for row in rows) else 0


def _mixed_load(
    server: stage.Server,
    cast: stage.Cast,
    raw: raw_slurm.RawSlurm,
    plan: Plan,
    python: str,
    settings: stage.Settings,
    submitted: list[int],
) -> Row:
    """Row 8 on the console's server, and on each other server of plan.load_servers in the same turns."""
    from bench import load

    visitors = load.crowd(cast, raw, stage.SCRIPT_TEXT, submitted, plan.load_clients)
    servers, started = [server], []
    try:
        for kind in filter(None, (k.strip() for k in plan.load_servers.split(","))):
            if kind == server.kind:
                continue
            other = stage.Server(python, server.env, settings.data_dir / f"{kind}.log", kind)
            other.start()
            started.append(other)
            servers.append(other)
        for each in servers:
            # The first request of each route compiles its templates and opens its connections: not measured.
            load.turn(each, "console", visitors, _mix(), 1.0)
        return load.run(
            servers,
            visitors,
            seconds=plan.load_seconds,
            rounds=plan.load_rounds,
            by_route=plan.load_by_route,
            profile=plan.load_profile,
        )
    finally:
        for other in started:
            other.stop()


def _mix() -> dict[str, int]:
    from tests.support.load import MIX

    return MIX


def write_results(result: dict[str, Any], folder: Path, mode: str, started_at: datetime) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{mode}-{started_at:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def _log_to_file(path: Path) -> None:
    """Keep the console's logging as configured (a line per audit event) but out of the table's way."""
    import logging

    stream = path.open("w")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
