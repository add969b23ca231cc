"""Durable SMTP acceptance throughput: mailgw vs a stock Postfix vs a bare aiosmtpd (issue 2).

One run drives the same Postfix ``smtp-source`` load against three servers on 127.0.0.1:

  mailgw   ``mailgw serve`` (SQLite in a fresh data dir per run; ``DB=postgres`` for a fresh
           PostgreSQL database per run), no relay host: accepted mail ends up "held".
           Every 250 means: spool file written + fsync'ed, row committed.
  postfix  /work/shared/bench/postfix-baseline.sh (SKIP_SINK=1): a throwaway Postfix instance on
           127.0.0.1:2528 that fsyncs every queue file and discards the mail. Its results.tsv is
           parsed; the script itself is run as-is (read-only, shared).
  bare     bench/bare_aiosmtpd.py: stock aiosmtpd 1.4.6, handle_DATA answers 250, stores nothing.

Each load is ``smtp-source -s SESSIONS -m MSGS -l SIZE -f a@x.gov.vn -t b@x.gov.vn`` timed with
a monotonic clock (same command as the Postfix baseline). Reported: msg/s per server and size
(median over RUNS), mailgw/postfix and mailgw/bare ratios, mailgw's peak RSS (VmHWM) and CPU
seconds, and a correctness check (rows in ``messages`` == messages sent, spool files == rows).

Env (all optional):
  MSGS=5000 RUNS=3 SESSIONS=20 SIZES="10240 102400" WARMUP=200
  ROUNDS=1                        repeat the whole sequence (every server, RUNS runs each) this
                                  many times; with ROUNDS>1 the report adds mailgw/postfix per
                                  round and their median: servers measured minutes apart on a
                                  shared machine drift, a round keeps each ratio's two sides close
  SERVERS="mailgw postfix bare"   which servers to measure, in this order
  DB=sqlite|postgres              mailgw's database (postgres: 127.0.0.1:5432, user postgres)
  PG_URL=postgresql://postgres@127.0.0.1:5432   server for DB=postgres (a database
                                  mailgw_bench_<pid> is created per run and dropped after)
  PROFILE=1                       one extra, un-timed mailgw run per size under
                                  ``py-spy record`` (needs py-spy in .venv or on PATH)
  PROFILE_MODE=cpu|idle|gil       py-spy samples: on-CPU threads / all threads (wall clock)
                                  / the GIL holder; summary by bench/profile_summary.py
  MAILGW_VARIANT=no-pipeline|no-parse   experiment only: run mailgw with the pipeline (or
                                  its MIME parse stage) switched off, see bench/mailgw_variant.py
  BENCH_DIR=/tmp/mgw-bench        scratch space (data dirs, configs, Postfix instance)
  OUT=bench/results/<timestamp>   where results go
  LOAD_TIMEOUT=900                seconds before one smtp-source load is abandoned

Run as root (the Postfix baseline needs it): bench/smtp_throughput.sh
"""

from __future__ import annotations

import atexit
import csv
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv" / "bin"
PYTHON = VENV / "python"
MAILGW = VENV / "mailgw"
SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX_BASELINE = Path("/work/shared/bench/postfix-baseline.sh")

ADDR = "127.0.0.1"
MAILGW_PORT = 2526
POSTFIX_PORT = 2528  # fixed by postfix-baseline.sh
BARE_PORT = 2529

MSGS = int(os.environ.get("MSGS", "5000"))
RUNS = int(os.environ.get("RUNS", "3"))
ROUNDS = int(os.environ.get("ROUNDS", "1"))
SESSIONS = int(os.environ.get("SESSIONS", "20"))
SIZES = [int(s) for s in os.environ.get("SIZES", "10240 102400").split()]
WARMUP = int(os.environ.get("WARMUP", "200"))
SERVERS = os.environ.get("SERVERS", "mailgw postfix bare").split()
DB = os.environ.get("DB", "sqlite")
PG_URL = os.environ.get("PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
PROFILE = os.environ.get("PROFILE", "") not in ("", "0")
PROFILE_MODE = os.environ.get("PROFILE_MODE", "cpu")
VARIANT = os.environ.get("MAILGW_VARIANT", "")
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/tmp/mgw-bench"))
LOAD_TIMEOUT = float(os.environ.get("LOAD_TIMEOUT", "900"))
STAMP = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
OUT = Path(os.environ.get("OUT", str(REPO / "bench" / "results" / STAMP)))

# Targets from issue 2: mailgw msg/s relative to Postfix, per size.
TARGETS = {10240: 1.0, 102400: 0.6}

_children: list[subprocess.Popen] = []
_pg_databases: list[str] = []


def log(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, file=sys.stderr, flush=True)
    with open(OUT / "run.log", "a") as fh:
        fh.write(line + "\n")


# ------------------------------------------------------------------ process handling


def start(argv: list[str], out: Path, **kwargs) -> subprocess.Popen:
    with open(out, "ab") as fh:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 40.0) -> int | None:
    """SIGTERM the process we started (by PID), SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {grace:.0f}s, killing it")
            proc.kill()
            proc.wait(10)
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def cleanup() -> None:
    for proc in list(_children):
        try:
            stop(proc, grace=20.0)
        except Exception as exc:  # keep cleaning up the others
            print(f"cleanup: pid {proc.pid}: {exc}", file=sys.stderr)
    for name in list(_pg_databases):
        pg_drop(name)


def _on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ADDR, port))
        except OSError:
            return False
    return True


def smtp_greets(port: int) -> bool:
    try:
        with socket.create_connection((ADDR, port), timeout=3) as s:
            s.settimeout(3)
            ok = s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            return ok
    except OSError:
        return False


def wait_smtp(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        if smtp_greets(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing answers with 220 on {ADDR}:{port} after {timeout:.0f}s")


# ------------------------------------------------------------------ /proc readings


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS in KiB from /proc/PID/status."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_cpu() -> tuple[int, int, int]:
    """(busy, iowait, total) jiffies over all CPUs."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, iowait, irq, softirq, steal = v
    return user + nice + system + irq + softirq + steal, iowait, sum(v)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 1)[0]


# ------------------------------------------------------------------ one load


@dataclass
class Load:
    server: str
    size: int
    run: int
    rc: int
    elapsed: float
    msg_per_s: float
    cpu_busy_pct: float  # whole machine, 100% per CPU
    iowait_pct: float
    load1_before: str
    errors: str = ""
    extra: dict = field(default_factory=dict)
    round: int = 1


def smtp_source(port: int, size: int, msgs: int, out: Path) -> tuple[int, float, str]:
    argv = [
        SMTP_SOURCE,
        "-s",
        str(SESSIONS),
        "-m",
        str(msgs),
        "-l",
        str(size),
        "-f",
        "a@x.gov.vn",
        "-t",
        "b@x.gov.vn",
        f"{ADDR}:{port}",
    ]
    t0 = time.monotonic()
    try:
        res = subprocess.run(argv, capture_output=True, timeout=LOAD_TIMEOUT)
        rc, text = res.returncode, (res.stdout + res.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        rc, text = -1, f"TIMEOUT after {LOAD_TIMEOUT:.0f}s; " + (exc.stdout or b"").decode()
    elapsed = time.monotonic() - t0
    out.write_text(" ".join(argv) + "\n" + text)
    return rc, elapsed, text.strip()


def timed_load(server: str, port: int, size: int, run: int) -> Load:
    subprocess.run(["sync"], check=False)
    time.sleep(1)
    load1 = loadavg()
    c0 = machine_cpu()
    rc, elapsed, text = smtp_source(port, size, MSGS, OUT / f"{server}_{size}_{run}.src.out")
    c1 = machine_cpu()
    ncpu = os.cpu_count() or 1
    total = max(c1[2] - c0[2], 1)
    return Load(
        server=server,
        size=size,
        run=run,
        rc=rc,
        elapsed=round(elapsed, 3),
        msg_per_s=round(MSGS / elapsed, 1) if elapsed > 0 else 0.0,
        cpu_busy_pct=round(100 * ncpu * (c1[0] - c0[0]) / total),
        iowait_pct=round(100 * ncpu * (c1[1] - c0[1]) / total),
        load1_before=load1,
        errors=text[:300],
    )


def warmup(port: int) -> None:
    if WARMUP > 0:
        smtp_source(port, 10240, WARMUP, OUT / f"warmup_{port}.src.out")


# ------------------------------------------------------------------ mailgw


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def pg_drop(name: str) -> None:
    try:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:
        print(f"cannot drop database {name}: {exc}", file=sys.stderr)
    if name in _pg_databases:
        _pg_databases.remove(name)


def mailgw_config(data_dir: Path, db_name: str | None) -> Path:
    cfg = BENCH_DIR / "mailgw.toml"
    db_line = f'database_url = "{PG_URL}/{db_name}"\n' if db_name else ""
    cfg.write_text(
        "# generated by bench/smtp_throughput.py\n"
        "[storage]\n"
        f'data_dir = "{data_dir}"\n'
        f"{db_line}"
        "[smtp]\n"
        f'listen = "{ADDR}:{MAILGW_PORT}"\n'
        'domains = ["x.gov.vn"]\n'
        "max_connections_per_client = 1000\n"
        "[api]\n"
        'listen = ""\n'
        "[log]\n"
        'level = "WARNING"\n'
    )
    return cfg


def count_stored(data_dir: Path, db_name: str | None) -> tuple[int, dict[str, int], int]:
    """(rows in messages, rows per state, .eml files in the spool)."""
    query_total = "SELECT count(*) FROM messages"
    query_states = "SELECT state, count(*) FROM messages GROUP BY state"
    if db_name:
        import psycopg

        with psycopg.connect(f"{PG_URL}/{db_name}") as conn:
            total = conn.execute(query_total).fetchone()[0]
            states = dict(conn.execute(query_states).fetchall())
    else:
        import sqlite3

        conn = sqlite3.connect(f"file:{data_dir / 'mailgw.db'}?mode=ro", uri=True, timeout=30)
        try:
            total = conn.execute(query_total).fetchone()[0]
            states = dict(conn.execute(query_states).fetchall())
        finally:
            conn.close()
    files = sum(1 for _ in (data_dir / "spool").glob("*/*.eml"))
    return total, states, files


def mailgw_rev() -> str:
    """HEAD and whether mailgw/ has uncommitted changes (others edit it while we measure)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        return done.stdout.strip()

    try:
        rev, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "mailgw")
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return rev + ("+dirty" if dirty else "")


def find_py_spy() -> str | None:
    cand = VENV / "py-spy"
    return str(cand) if cand.exists() else shutil.which("py-spy")


def mailgw_run(size: int, run: int, profile: bool = False) -> Load | None:
    """Fresh data dir (and database), start mailgw, warm up, one timed load, check, stop."""
    label = f"profile{run}" if profile else str(run)
    data_dir = BENCH_DIR / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    db_name = None
    if DB == "postgres":
        db_name = f"mailgw_bench_{os.getpid()}"
        pg_drop(db_name)
        pg_admin(f'CREATE DATABASE "{db_name}"')
        _pg_databases.append(db_name)
    cfg = mailgw_config(data_dir, db_name)
    if db_name:
        up = subprocess.run(
            [str(MAILGW), "db", "upgrade", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if up.returncode != 0:
            raise RuntimeError(f"mailgw db upgrade failed: {up.stdout}{up.stderr}")
    if not port_free(MAILGW_PORT):
        raise RuntimeError(f"{ADDR}:{MAILGW_PORT} is already in use")
    argv = [str(MAILGW), "serve", "-c", str(cfg)]
    env = None
    if VARIANT:  # experiment: parts of mailgw switched off (bench/mailgw_variant.py)
        argv = [str(PYTHON), str(REPO / "bench" / "mailgw_variant.py"), "serve", "-c", str(cfg)]
        env = dict(os.environ, VARIANT=VARIANT)
    proc = start(argv, OUT / f"mailgw_{size}_{label}.serve.log", env=env)
    spy = None
    t_start = time.monotonic()
    try:
        wait_smtp(MAILGW_PORT, proc)
        t_ready = time.monotonic()
        warmup(MAILGW_PORT)
        if profile:
            py_spy = find_py_spy()
            if not py_spy:
                log("PROFILE=1 but py-spy is not installed (.venv/bin/pip install py-spy)")
                return None
            # raw = collapsed stacks (for bench/profile_summary.py), one root per thread.
            # PROFILE_MODE: cpu = on-CPU samples only; idle = also threads blocked in
            # fsync/epoll/queues (wall clock); gil = only the thread holding the GIL.
            mode_flags = {"cpu": [], "idle": ["--idle"], "gil": ["--gil"]}[PROFILE_MODE]
            spy = start(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "200",
                    "--threads",
                    *mode_flags,
                    "--format",
                    "raw",
                    "-o",
                    str(OUT / f"profile_mailgw_{size}_{PROFILE_MODE}.txt"),
                ],
                OUT / f"profile_mailgw_{size}.py-spy.log",
            )
            time.sleep(1.0)
        cpu0 = proc_cpu_seconds(proc.pid)
        load = timed_load("mailgw-profiled" if profile else "mailgw", MAILGW_PORT, size, run)
        cpu1 = proc_cpu_seconds(proc.pid)
        mem = proc_status(proc.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                stop(spy)
            if spy in _children:
                _children.remove(spy)
        expected = WARMUP + MSGS
        total = states = files = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: rows are committed before each 250
            total, states, files = count_stored(data_dir, db_name)
            if total >= expected:
                break
            time.sleep(0.5)
        load.extra = {
            "db": DB,
            "mailgw_rev": mailgw_rev(),
            "mailgw_cpu_s": round(cpu1 - cpu0, 2),
            "mailgw_cpu_ms_per_msg": round(1000 * (cpu1 - cpu0) / MSGS, 3),
            "VmHWM_kB": mem.get("VmHWM"),
            "VmRSS_kB": mem.get("VmRSS"),
            "threads": mem.get("Threads"),
            "expected_rows": expected,
            "rows": total,
            "spool_files": files,
            "states": states,
            "count_ok": total == expected and files == expected and load.rc == 0,
        }
        return load
    finally:
        t_stop = time.monotonic()
        rc = stop(proc)
        t_end = time.monotonic()
        if "t_ready" in locals():
            log(
                f"  mailgw start-up {t_ready - t_start:.1f}s, stop (SIGTERM to exit)"
                f" {t_end - t_stop:.1f}s"
            )
        if rc not in (0, None):
            log(f"mailgw exited with {rc} (see {OUT}/mailgw_{size}_{label}.serve.log)")
        if db_name:
            pg_drop(db_name)


# ------------------------------------------------------------------ bare aiosmtpd


def bare_loads() -> list[Load]:
    if not port_free(BARE_PORT):
        raise RuntimeError(f"{ADDR}:{BARE_PORT} is already in use")
    proc = start(
        [str(PYTHON), str(REPO / "bench" / "bare_aiosmtpd.py"), "--port", str(BARE_PORT)],
        OUT / "bare.log",
    )
    loads = []
    try:
        wait_smtp(BARE_PORT, proc)
        warmup(BARE_PORT)
        for size in SIZES:
            for run in range(1, RUNS + 1):
                load = timed_load("bare", BARE_PORT, size, run)
                load.extra = {"VmHWM_kB": proc_status(proc.pid).get("VmHWM")}
                record(load)
                loads.append(load)
    finally:
        stop(proc)
    return loads


# ------------------------------------------------------------------ Postfix (shared script)


def postfix_loads() -> list[Load]:
    if os.geteuid() != 0:
        log("postfix: skipped (the baseline needs root)")
        return []
    if not POSTFIX_BASELINE.exists():
        log(f"postfix: skipped ({POSTFIX_BASELINE} not found)")
        return []
    pf_bench = BENCH_DIR / "postfix"
    env = dict(
        os.environ,
        BENCH=str(pf_bench),
        RUNS=str(RUNS),
        MSGS=str(MSGS),
        SESSIONS=str(SESSIONS),
        SIZES=" ".join(map(str, SIZES)),
        WARMUP=str(WARMUP),
        SKIP_SINK="1",
    )
    env.pop("KEEP_INSTANCE", None)
    log(f"postfix: running {POSTFIX_BASELINE} (BENCH={pf_bench}, SKIP_SINK=1)")
    proc = start(["bash", str(POSTFIX_BASELINE)], OUT / "postfix-baseline.out", env=env)
    budget = 120 + len(SIZES) * RUNS * (LOAD_TIMEOUT + 60)
    try:
        proc.wait(budget)
    except subprocess.TimeoutExpired:
        log(f"postfix: baseline still running after {budget:.0f}s, stopping it")
    rc = stop(proc)
    res = pf_bench / "results"
    for name in ("results.tsv", "summary.txt", "run.log", "dsync.txt", "maillog-summary.txt"):
        if (res / name).exists():
            shutil.copy(res / name, OUT / f"postfix-{name}")
    if rc != 0:
        log(f"postfix: baseline exited with {rc}; see {OUT}/postfix-baseline.out")
    loads = []
    tsv = res / "results.tsv"
    if tsv.exists():
        with open(tsv) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                if row["target"] != "postfix":
                    continue
                load = Load(
                    server="postfix",
                    size=int(row["size"]),
                    run=int(row["run"]),
                    rc=int(row["rc"]),
                    elapsed=float(row["elapsed_s"]),
                    msg_per_s=float(row["msg_per_s"]),
                    cpu_busy_pct=float(row["cpu_busy_pct"]),
                    iowait_pct=float(row["iowait_pct"]),
                    load1_before="",
                    extra={
                        "accepted": row["accepted"],
                        "sent/other/removed": row["sent/other/removed"],
                        "queue_empty": row["queue_empty"],
                        "backlog_at_end": row["backlog_at_end"],
                    },
                )
                record(load)
                loads.append(load)
    return loads


# ------------------------------------------------------------------ report


def record(load: Load) -> None:
    with open(OUT / "loads.jsonl", "a") as fh:
        fh.write(json.dumps(asdict(load)) + "\n")
    ex = load.extra
    note = ""
    if load.server.startswith("mailgw"):
        note = (
            f" rev={ex.get('mailgw_rev')} cpu={ex['mailgw_cpu_s']}s"
            f" ({ex['mailgw_cpu_ms_per_msg']} ms/msg)"
            f" VmHWM={ex['VmHWM_kB']} kB rows={ex['rows']}/{ex['expected_rows']}"
            f" files={ex['spool_files']} states={ex['states']}"
            f" {'OK' if ex['count_ok'] else 'COUNT MISMATCH'}"
        )
    log(
        f"{load.server:8s} {load.size:7d} B run {load.run}: {load.msg_per_s:7.1f} msg/s"
        f" ({load.elapsed:.2f}s, rc={load.rc}, machine cpu {load.cpu_busy_pct:.0f}%"
        f" iowait {load.iowait_pct:.0f}%, load1 {load.load1_before or '-'}){note}"
    )
    if load.rc != 0 or (load.server != "postfix" and load.errors):
        log(f"  smtp-source said: {load.errors}")


def median(loads: list[Load], server: str, size: int) -> float | None:
    vals = [x.msg_per_s for x in loads if x.server == server and x.size == size and x.rc == 0]
    return statistics.median(vals) if vals else None


def report(loads: list[Load]) -> str:
    def fmt(v: float | None, spec: str = "8.1f") -> str:
        return format(v, spec) if v is not None else " " * (int(spec.split(".")[0]) - 1) + "-"

    mg_name = f"mailgw/{DB}" + (f"[{VARIANT}]" if VARIANT else "")
    lines = [
        f"smtp-source -s {SESSIONS} -m {MSGS} -l SIZE, median msg/s over {RUNS * ROUNDS} run(s);"
        f" host {os.uname().release}, {os.cpu_count()} CPUs",
        "",
        f"{'size':>8}  {mg_name:>15}  {'postfix':>8}  {'bare':>8}"
        f"  {'mailgw/postfix':>14}  {'target':>6}  {'mailgw/bare':>11}",
    ]
    for size in SIZES:
        m, p, b = (
            median(loads, "mailgw", size),
            median(loads, "postfix", size),
            median(loads, "bare", size),
        )
        rp = m / p if m and p else None
        rb = m / b if m and b else None
        target = TARGETS.get(size)
        verdict = ""
        if rp is not None and target is not None:
            verdict = "met" if rp >= target else "MISSED"
        lines.append(
            f"{size // 1024:>5} KB  {fmt(m, '15.1f')}  {fmt(p)}  {fmt(b)}"
            f"  {fmt(rp, '13.2f')}{'x' if rp else ' '}  {(f'>={target}x' if target else ''):>6}"
            f" {verdict:6s} {fmt(rb, '10.2f')}{'x' if rb else ''}"
        )
    if ROUNDS > 1:
        lines.append("")
        lines.append("mailgw/postfix per round (medians within the round), then their median:")
        for size in SIZES:
            ratios = []
            for number in range(1, ROUNDS + 1):
                in_round = [x for x in loads if x.round == number]
                m, p = median(in_round, "mailgw", size), median(in_round, "postfix", size)
                if m and p:
                    ratios.append(m / p)
            if ratios:
                each = " ".join(f"{r:.2f}x" for r in ratios)
                lines.append(
                    f"{size // 1024:>5} KB  {each}  -> median {statistics.median(ratios):.2f}x"
                )
    mg = [x for x in loads if x.server == "mailgw"]
    if mg:
        lines.append("")
        lines.append(
            "mailgw per run: peak RSS (VmHWM after the load), CPU of the mailgw process,"
            " correctness (rows == spool files == sent incl. warm-up)"
        )
        for x in mg:
            ex = x.extra
            lines.append(
                f"  {x.size // 1024:>4} KB run {x.run}: {x.msg_per_s:7.1f} msg/s"
                f"  VmHWM {ex['VmHWM_kB'] / 1024 if ex['VmHWM_kB'] else 0:6.1f} MiB"
                f"  cpu {ex['mailgw_cpu_s']:6.2f}s = {ex['mailgw_cpu_ms_per_msg']:.3f} ms/msg"
                f"  rows {ex['rows']}/{ex['expected_rows']} files {ex['spool_files']}"
                f"  {'OK' if ex['count_ok'] else 'MISMATCH'}"
            )
        peak = max((x.extra["VmHWM_kB"] or 0) for x in mg)
        lines.append(f"  peak memory over all mailgw runs: {peak / 1024:.1f} MiB (VmHWM)")
        bad = [x for x in mg if not x.extra["count_ok"]]
        lines.append(
            "  correctness: "
            + ("all runs OK" if not bad else f"{len(bad)} run(s) with a COUNT MISMATCH")
        )
    lines.append("")
    lines.append(
        "ratios: mailgw/postfix >= 1 means mailgw accepts durably at least as fast as"
        " Postfix; mailgw/bare is the share of aiosmtpd's no-storage ceiling reached."
    )
    return "\n".join(lines)


def one_round(round_number: int) -> list[Load]:
    """Every server in SERVERS, RUNS timed loads per size each."""
    loads: list[Load] = []
    first_run = (round_number - 1) * RUNS + 1
    for server in SERVERS:
        if server == "mailgw":
            for size in SIZES:
                for run in range(first_run, first_run + RUNS):
                    log(f"mailgw/{DB}: size={size} run={run}")
                    load = mailgw_run(size, run)
                    if load:
                        record(load)
                        loads.append(load)
        elif server == "postfix":
            loads += renumbered(postfix_loads(), first_run)
        elif server == "bare":
            log("bare aiosmtpd")
            loads += renumbered(bare_loads(), first_run)
        else:
            log(f"unknown server {server!r} in SERVERS, skipped")
    for load in loads:
        load.round = round_number
    return loads


def renumbered(loads: list[Load], first_run: int) -> list[Load]:
    for load in loads:
        load.run += first_run - 1
    return loads


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    for binary in (SMTP_SOURCE, str(MAILGW), str(PYTHON)):
        if not os.access(binary, os.X_OK):
            print(f"missing {binary}", file=sys.stderr)
            return 1
    log(
        f"results in {OUT}; servers {SERVERS}; sizes {SIZES}; msgs {MSGS}; runs {RUNS};"
        f" rounds {ROUNDS};"
        f" sessions {SESSIONS}; warm-up {WARMUP}; db {DB}; profile {PROFILE}"
        f"{'; VARIANT ' + VARIANT if VARIANT else ''}"
    )
    log(
        f"host {os.uname().release}, {os.cpu_count()} CPUs, "
        f"load average {Path('/proc/loadavg').read_text().strip()}"
    )
    log(f"mailgw at {mailgw_rev()} (recorded again for every mailgw run)")
    loads: list[Load] = []
    for round_number in range(1, ROUNDS + 1):
        if ROUNDS > 1:
            log(f"round {round_number} of {ROUNDS}")
        loads += one_round(round_number)
    if PROFILE and "mailgw" in SERVERS:
        for size in SIZES:
            log(f"mailgw/{DB}: profiled run, size={size} (not counted)")
            load = mailgw_run(size, 1, profile=True)
            if load:
                record(load)
                summary = REPO / "bench" / "profile_summary.py"
                prof = OUT / f"profile_mailgw_{size}_{PROFILE_MODE}.txt"
                if prof.exists():
                    res = subprocess.run(
                        [str(PYTHON), str(summary), str(prof)],
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                    (OUT / f"profile_mailgw_{size}_{PROFILE_MODE}.summary.txt").write_text(
                        res.stdout + res.stderr
                    )
    text = report(loads)
    (OUT / "summary.txt").write_text(text + "\n")
    print("\n" + text)
    mg = [x for x in loads if x.server == "mailgw"]
    return 0 if all(x.extra.get("count_ok") for x in mg) else 2


if __name__ == "__main__":
    sys.exit(main())
