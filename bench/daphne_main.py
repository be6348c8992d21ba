"""`python -m daphne` (`--server uvicorn`: `python -m uvicorn`) plus a log of the collector's longer pauses.

So that a stall is blamed rightly.

The console runs unchanged; the only addition is a gc callback that appends one line per
collection of at least PAUSE_LOGGED seconds to BENCH_GC_LOG: wall-clock time, seconds, generation.
"""

from __future__ import annotations

import gc
import os
import sys
import time

PAUSE_LOGGED = 0.005


def _log_pauses(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    began = [0.0]

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took = time.perf_counter() - began[0]
        if took >= PAUSE_LOGGED:
            out.write(f"{time.time():.3f} {took:.4f} {info.get('generation', -1)}\n")

    gc.callbacks.append(note)


def main() -> None:
    path = os.environ.get("BENCH_GC_LOG")
    if path:
        _log_pauses(path)
    if sys.argv[1:2] == ["--server"]:
        server = sys.argv[2]
        del sys.argv[1:3]
    else:
        server = "daphne"
    if server == "uvicorn":
        import uvicorn.main

        sys.argv[0] = "uvicorn"
        uvicorn.main.main()
        return
    from daphne.cli import CommandLineInterface

    sys.argv[0] = "daphne"
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
