"""Where a py-spy profile's CPU goes: the frames holding the most samples, inclusive and exclusive.

    python -m bench.profile FOLDER_OR_FILE [--top N] [--match TEXT]

Reads py-spy's raw (collapsed) output, as row 8 writes it with `--set load_profile=FOLDER`, and prints for
each file the share of samples under each frame (inclusive: anywhere on the stack) and of samples spent in
the frame itself (exclusive). A frame is its function and file, without the line, so one function is one row.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def frame(text: str) -> str:
    """`function (path/to/file.py:12)` → `function file.py`."""
    function, _, where = text.partition(" (")
    return f"{function} {where.rsplit('/', 1)[-1].split(':', 1)[0]}".strip()


def shares(path: Path) -> tuple[int, Counter, Counter]:
    """Samples in all, and per frame inclusive and exclusive."""
    inclusive: Counter = Counter()
    exclusive: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame(f) for f in stack.split(";")]
        total += n
        for each in set(frames):
            inclusive[each] += n
        exclusive[frames[-1]] += n
    return total, inclusive, exclusive


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("where", type=Path, help="a py-spy raw file, or a folder of them")
    parser.add_argument("--top", type=int, default=40, help="frames to print in each list (40)")
    parser.add_argument("--match", default="", help="only frames whose name contains this")
    args = parser.parse_args(argv)
    files = sorted(args.where.glob("*.txt")) if args.where.is_dir() else [args.where]
    if not files:
        print(f"bench.profile: no profiles in {args.where}", file=sys.stderr)
        return 1
    for path in files:
        total, inclusive, exclusive = shares(path)
        print(f"== {path.name}: {total} samples")
        for title, counts in (("inclusive", inclusive), ("exclusive", exclusive)):
            print(f"  -- {title}")
            rows = [(k, v) for k, v in counts.most_common() if args.match in k][: args.top]
            for name, n in rows:
                print(f"  {100 * n / max(1, total):5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
