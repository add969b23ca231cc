"""Pipeline processes: parsing, rules and registering run beside the SMTP listener, not in it.

The work of the pipeline is CPU-bound Python (MIME parsing, text extraction, folding, rules). In
the gateway's own process it competes with the event loop for the interpreter lock; measured with
bench/smtp_throughput.sh it took 57-72 % of the lock and cut durable acceptance by more than
half. So `mailgw serve` runs the pipeline in `pipeline.processes` child processes. They share
nothing with the gateway but the database and the data folder: they lease work like any other
node, and take the active rules version from the database, where the gateway stores every version
it loads (from the file, on SIGHUP, or through the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailgw import aio, metrics
from mailgw.config import Config
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.models import RuleVersion
from mailgw.intake import IntakeActivity
from mailgw.pipeline import Pipeline
from mailgw.rules.loader import default_rules, load_rules
from mailgw.rules.problems import RulesError
from mailgw.rules.ruleset import RuleSet
from mailgw.spool import Spool
from mailgw.stages import build_stages

log = logging.getLogger(__name__)

RULES_REFRESH_SECONDS = 1.0


class DatabaseRules:
    """The rules version the gateway marked active in the database."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions
        self._active: RuleSet = default_rules()
        self.refresh()

    @property
    def active(self) -> RuleSet:
        return self._active

    def refresh(self) -> None:
        with self.sessions() as session:
            row = session.execute(
                select(RuleVersion.sha256, RuleVersion.source, RuleVersion.text).where(
                    RuleVersion.active
                )
            ).first()
        if row is None or row.sha256 == self._active.version:
            return
        try:
            self._active = load_rules(row.text, row.source)
        except RulesError as exc:  # stored versions were valid when stored; keep the last good
            log.error("active rules version %s does not load: %s", row.sha256[:12], exc)
            return
        log.info("pipeline now uses rules version %s", row.sha256[:12])


async def _run(config: Config, parent: int, intake: IntakeActivity | None) -> None:
    engine = make_engine(config.storage.effective_database_url)
    sessions = make_sessionmaker(engine)
    rules = await asyncio.to_thread(DatabaseRules, sessions)
    spool = Spool(config.storage.data_dir, sessions)
    pipeline = Pipeline(
        sessions,
        spool,
        build_stages(config, sessions, rules),
        relay_enabled=bool(config.relay.host),
        lifetime=dt.timedelta(hours=config.relay.max_lifetime_hours),
        workers=config.pipeline.workers,
        lease_seconds=config.pipeline.lease_seconds,
        poll_seconds=config.pipeline.poll_seconds,
    )
    if intake is not None:
        pipeline.intake_bursting = intake.bursting
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the gateway decides when we stop

    async def follow_rules_and_parent() -> None:
        while not stopping.is_set():
            await asyncio.sleep(RULES_REFRESH_SECONDS)
            if os.getppid() != parent:  # the gateway died (kill -9): do not run on alone
                log.warning("gateway process %d is gone; pipeline process stops", parent)
                stopping.set()
                return
            with contextlib.suppress(Exception):
                await asyncio.to_thread(rules.refresh)

    follower = asyncio.create_task(follow_rules_and_parent())
    try:
        await pipeline.run(stopping)
    finally:
        follower.cancel()
        spool.close()
        engine.dispose()


def pipeline_process_main(
    config: Config, parent: int, intake: IntakeActivity | None = None
) -> None:
    """Entry point of a pipeline process (started with the spawn method)."""
    # Accepting mail comes first: during a burst the pipeline yields the CPU to the SMTP
    # listener and catches up afterwards (its work is leased, nothing waits on it).
    with contextlib.suppress(OSError):
        os.nice(config.pipeline.nice)
    logging.basicConfig(
        level=config.log.level,
        format="%(asctime)s %(levelname)s pipeline[%(process)d] %(name)s: %(message)s",
    )
    aio.run(_run(config, parent, intake), config.runtime.event_loop)


class ChildProcesses:
    """Starts ``count`` processes running ``target(config, parent_pid)``, restarts one that dies,
    stops them on shutdown (the pipeline processes)."""

    def __init__(
        self,
        config: Config,
        count: int,
        target: Callable[..., None],
        name: str,
        extra_args: tuple[Any, ...] = (),
    ):
        self.extra_args = extra_args
        self.config = config
        self.count = count
        self.target = target
        self.name = name
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self) -> BaseProcess:
        process = self.context.Process(
            target=self.target,
            args=(self.config, os.getpid(), *self.extra_args),
            name=self.name,
            daemon=True,
        )
        with metrics.child_environment(self.config.storage.data_dir):
            process.start()
        log.info("%s process %d started", self.name, process.pid)
        return process

    async def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            for i, process in enumerate(self.processes):
                if not process.is_alive() and not self._stopping:
                    log.error("%s process %d exited (%s); restarting", self.name, process.pid,
                              process.exitcode)  # fmt: skip
                    self.processes[i] = self._spawn()

    async def stop(self, timeout: float) -> None:
        """SIGTERM: each process finishes what it has in hand, then exits."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = asyncio.get_running_loop().time() + timeout
        for process in self.processes:
            remaining = max(0.1, deadline - asyncio.get_running_loop().time())
            await asyncio.to_thread(process.join, remaining)
            if process.is_alive():
                log.warning("%s process %d did not stop in time; killing", self.name, process.pid)
                process.kill()
                await asyncio.to_thread(process.join, 5)
