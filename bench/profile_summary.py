"""Summarise a ``py-spy record --format raw --threads [--idle]`` profile as text.

Per thread: samples and share. Then, over the threads that did Python work, the top functions
by self time (leaf frame) and by inclusive time (anywhere on the stack), and a few buckets the
mailgw hot path is made of (aiosmtpd command loop, DATA reader, spool write/fsync, SQLAlchemy,
pipeline, logging, event loop idle).

Usage: .venv/bin/python bench/profile_summary.py PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

# (bucket, regex on one frame "func (file:line)"); first match from the leaf upwards wins.
BUCKETS = [
    ("idle: epoll/select (loop waiting)", r"^(select|poll|_run_once) \(.*selectors\.py"),
    ("idle: worker waiting for work", r"^(wait|_worker) \(.*(threading|thread)\.py"),
    ("spool: fsync / write / rename", r"^(write_durably|fsync_dir) \("),
    ("spool: sha256", r"_write_file \(.*spool\.py"),
    ("db: commit (SQLAlchemy + driver)", r"^_commit \(.*spool\.py"),
    ("pipeline (parse/trace stages, leases)", r"pipeline\.py|mailgw/mime/"),
    ("logging", r"\(.*logging/__init__\.py"),
    ("smtp: DATA reader (_read_data)", r"^_read_data \("),
    ("smtp: DATA checks (bare LF, dot-unstuff)", r"^(find_bare_line_ending|dot_unstuff) \("),
    ("smtp: handle_DATA (Incoming, Received)", r"^(handle_DATA|received_header) \("),
    ("smtp: aiosmtpd session / commands", r"aiosmtpd/smtp\.py"),
    ("asyncio transports / streams", r"asyncio/(selector_events|streams|base_events|events)\.py"),
]


def parse(path: str) -> dict[str, Counter]:
    """thread label -> Counter(stack tuple (root first) -> samples)."""
    threads: dict[str, Counter] = defaultdict(Counter)
    with open(path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = stack.split(";")
            thread = "?"
            if frames and (frames[0].startswith("thread ") or frames[0].startswith("process ")):
                # with --threads the first frame names the thread; drop "process" frames too
                while frames and (
                    frames[0].startswith("process ") or frames[0].startswith("thread ")
                ):
                    if frames[0].startswith("thread "):
                        thread = frames[0]
                    frames = frames[1:]
            threads[thread][tuple(frames)] += n
    return threads


def short(frame: str) -> str:
    m = re.match(r"^(.*) \((.*?)(:\d+)?\)$", frame)
    if not m:
        return frame
    func, file = m.group(1), m.group(2)
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{func} ({file})"


def bucket(frames: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        for name, rx in BUCKETS:
            if re.search(rx, frame):
                return name
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    threads = parse(args.profile)
    total = sum(sum(c.values()) for c in threads.values())
    if not total:
        print("no samples")
        return
    print(f"{args.profile}: {total} samples, {len(threads)} thread(s)")
    print("\nper thread (samples, share of all samples, top leaf):")
    for name, c in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(c.values())
        leaf = Counter()
        for st, k in c.items():
            leaf[short(st[-1]) if st else "?"] += k
        top = ", ".join(f"{f} {100 * k / n:.0f}%" for f, k in leaf.most_common(2))
        print(f"  {n:7d} {100 * n / total:5.1f}%  {name[:60]}: {top}")

    all_stacks: Counter = Counter()
    for c in threads.values():
        all_stacks.update(c)
    buckets: Counter = Counter()
    for st, n in all_stacks.items():
        buckets[bucket(st)] += n
    print("\nbuckets (all threads; idle = waiting in epoll/queue, with --idle):")
    for name, n in buckets.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")

    busy = Counter({st: n for st, n in all_stacks.items() if not bucket(st).startswith("idle")})
    nbusy = sum(busy.values()) or 1
    self_t: Counter = Counter()
    incl: Counter = Counter()
    for st, n in busy.items():
        if st:
            self_t[short(st[-1])] += n
        for f in {short(f) for f in st}:
            incl[f] += n
    print(f"\ntop self time (non-idle samples = {nbusy}):")
    for f, n in self_t.most_common(args.top):
        print(f"  {100 * n / nbusy:5.1f}%  {f}")
    print("\ntop inclusive time (non-idle samples):")
    for f, n in incl.most_common(args.top):
        print(f"  {100 * n / nbusy:5.1f}%  {f}")


if __name__ == "__main__":
    main()
