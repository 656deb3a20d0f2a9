"""Summarise a py-spy profile in collapsed-stack form (`py-spy record --format raw`).

    py-spy record --pid PID -d 15 -r 200 --format raw -o /tmp/gateway.txt
    python bench/profile_summary.py /tmp/gateway.txt [--top 60] [--match gateway/]

Prints, for every function (`name (file)`, line numbers dropped), the share of samples in which
it is on the stack (inclusive) and on top of the stack (self). py-spy samples only while the
process runs Python code unless `--idle` is given, so the shares are of the busy time. Self time
includes the garbage collector, which runs inside whatever frame happens to allocate.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def summarise(path: str) -> tuple[int, Counter[str], Counter[str]]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [_LINE.sub(")", fr) for fr in stack.split(";")]
            for fr in set(frames):
                inclusive[fr] += n
            own[frames[-1]] += n
    return total, inclusive, own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=60)
    p.add_argument("--match", default="", help="only functions whose text contains this")
    args = p.parse_args()
    total, inclusive, own = summarise(args.profile)
    print(f"{total} samples")
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"\n== {title}")
        shown = 0
        for fn, n in counts.most_common():
            if args.match in fn:
                print(f"{100 * n / total:5.1f}%  {fn}")
                shown += 1
                if shown >= args.top:
                    break


if __name__ == "__main__":
    main()
