"""Summarise py-spy's raw (folded) profiles: where the samples are, inclusive and self.

    python -m bench.folded PROFILE.txt [--top 40] [--only alertd]

A frame is shown as `function (package/module.py:line)`; `--by-function` drops the
line so every line of a function counts together.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str, by_function: bool) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    parts = Path(m["path"]).parts
    where = "/".join(parts[-2:])
    if by_function or not m["line"]:
        return f"{m['fn']} ({where})"
    return f"{m['fn']} ({where}:{m['line']})"


def summarise(
    path: Path, top: int, by_function: bool, only: str | None
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short(f, by_function) for f in stack.split(";") if f]
        for f in set(frames):
            if only is None or only in f:
                inclusive[f] += n
        if frames and (only is None or only in frames[-1]):
            own[frames[-1]] += n
    return total, inclusive.most_common(top), own.most_common(top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--by-function", action="store_true")
    p.add_argument("--only", help="only frames whose text contains this (e.g. alertd/)")
    args = p.parse_args()
    total, inclusive, own = summarise(args.profile, args.top, args.by_function, args.only)
    print(f"{total} samples")
    print("--- inclusive")
    for frame, n in inclusive:
        print(f"{100 * n / max(total, 1):5.1f}%  {frame}")
    print("--- self")
    for frame, n in own:
        print(f"{100 * n / max(total, 1):5.1f}%  {frame}")


if __name__ == "__main__":
    main()
