"""The gateway's lifecycle: start every part in one asyncio loop, stop them in order."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailgw import metrics
from mailgw.api.app import create_app
from mailgw.config import Config
from mailgw.db.engine import make_engine, make_sessionmaker
from mailgw.db.migrate import head_revision, is_up_to_date, upgrade
from mailgw.db.models import PROCESSING, QUEUED, SENDING, SPOOLED, Message, RuleVersion
from mailgw.db.rule_versions import activate_version
from mailgw.delivery import RelayQueue
from mailgw.ingress import Ingress
from mailgw.intake import IntakeActivity
from mailgw.notify.outgoing import Notifier, Outgoing, templates_for
from mailgw.pipeline import Pipeline, Stage, release_held_for_relay
from mailgw.registry.blobs import FileBlobStore
from mailgw.retention import prune, prune_periodically
from mailgw.rules.manager import RulesManager
from mailgw.rules.problems import RulesError
from mailgw.smtp.relay import RelayTarget
from mailgw.spool import Spool
from mailgw.stages import build_stages
from mailgw.worker import ChildProcesses, pipeline_process_main

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 30.0


class SchemaOutOfDate(Exception):
    pass


class RulesFileError(Exception):
    """The configured rules file cannot be loaded at start; ``problems`` name line and column."""

    def __init__(self, problems: list[str]):
        super().__init__("the rules file has errors:\n" + "\n".join(problems))
        self.problems = problems


def open_database(config: Config, *, migrate_sqlite: bool = True) -> Engine:
    """Connect; the embedded SQLite default migrates itself, PostgreSQL never silently."""
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    url = config.storage.effective_database_url
    engine = make_engine(url)
    if not is_up_to_date(engine):
        if url.startswith("sqlite") and migrate_sqlite:
            upgrade(engine)
        else:
            raise SchemaOutOfDate(
                f"the database schema is not at {head_revision(engine)}: run `mailgw db upgrade`"
            )
    return engine


def relay_target(config: Config) -> RelayTarget | None:
    relay = config.relay
    if not relay.host:
        return None
    return RelayTarget(
        host=relay.host,
        port=relay.port,
        starttls=relay.starttls,
        implicit_tls=relay.implicit_tls,
        verify_tls=relay.verify_tls,
        ca_file=str(relay.ca_file) if relay.ca_file else None,
        username=relay.username or None,
        password=relay.password or None,
        timeout=relay.timeout,
        helo_name=config.hostname,
    )


def api_server(
    app: FastAPI, host: str, port: int, *, tls_cert: Path | None = None, tls_key: Path | None = None
) -> uvicorn.Server:
    """uvicorn serving the API inside the gateway's own event loop: no access log (the audit
    log records reads), no proxy headers, no lifespan, and the gateway's signal handlers, not
    uvicorn's."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # the audit log records the TCP peer: uvicorn would take X-Forwarded-For from any
            # client on 127.0.0.1 (its default forwarded_allow_ips), the default listen address
            proxy_headers=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server


class Gateway:
    def __init__(self, config: Config, stages: list[Stage] | None = None):
        self.config = config
        self.stages = stages  # None: see mailgw/stages.py
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.engine: Engine | None = None
        self.sessions: sessionmaker[Session] | None = None
        self.api_server: uvicorn.Server | None = None
        self.listening: dict[str, tuple[str, int]] = {}
        self.intake: IntakeActivity | None = None  # shared with pipeline processes

    async def start(self) -> None:
        config = self.config
        self.engine = await asyncio.to_thread(open_database, config)
        self.sessions = make_sessionmaker(self.engine)
        lifetime = dt.timedelta(hours=config.relay.max_lifetime_hours)
        target = relay_target(config)
        await asyncio.to_thread(self._recover, target is not None, lifetime)
        self.rules = await asyncio.to_thread(self._load_rules)
        self.rules_watch = asyncio.create_task(self.rules.watch(config.rules.poll_seconds))
        self.spool = Spool(config.storage.data_dir, self.sessions, config.storage.min_free_mb)
        self.pipeline: Pipeline | None = None
        self.pipeline_processes: ChildProcesses | None = None
        if config.pipeline.processes and self.stages is None:
            await asyncio.to_thread(metrics.reset_child_metrics, config.storage.data_dir)
            self.intake = IntakeActivity()
            self.pipeline_processes = ChildProcesses(
                config,
                config.pipeline.processes,
                pipeline_process_main,
                "mailgw-pipeline",
                extra_args=(self.intake,),
            )
            await self.pipeline_processes.start()
        else:
            stages = self.stages or build_stages(config, self.sessions, self.rules)
            self.pipeline = Pipeline(
                self.sessions,
                self.spool,
                stages,
                relay_enabled=target is not None,
                lifetime=lifetime,
                workers=config.pipeline.workers,
                lease_seconds=config.pipeline.lease_seconds,
                poll_seconds=config.pipeline.poll_seconds,
            )
            self.tasks.append(asyncio.create_task(self.pipeline.run(self.stopping)))
        self.relay: RelayQueue | None = None
        if target is not None:
            self.relay = RelayQueue(
                self.sessions,
                self.spool.read,
                target,
                self.spool.accept,
                hostname=config.hostname,
                postmaster=config.relay.postmaster or f"postmaster@{config.hostname}",
                lifetime=lifetime,
                retry_initial=config.relay.retry_initial_seconds,
                retry_max=config.relay.retry_max_seconds,
                workers=config.relay.workers,
                lease_seconds=config.pipeline.lease_seconds,
                poll_seconds=config.pipeline.poll_seconds,
            )
            if self.pipeline is not None:
                self.pipeline.on_processed = self.relay.wakeup.set
            self.tasks.append(asyncio.create_task(self.relay.run(self.stopping)))
        self.spool.on_committed = self._on_spooled
        self._start_retention()
        await self._start_smtp()
        await self._start_api()

    def _load_rules(self) -> RulesManager:
        assert self.sessions is not None
        with self.sessions() as session:  # rules sent through the API, when there is no file
            stored = session.scalar(
                select(RuleVersion.text).where(RuleVersion.active, RuleVersion.source == "api")
            )
        manager = RulesManager(self.config.rules.file, on_loaded=self._store_rules_version)
        if manager.problems:
            raise RulesFileError([str(p) for p in manager.problems])
        if stored is not None and manager.path is None:
            try:
                manager.activate_text(stored, "api")
            except RulesError as exc:
                log.error("the rules stored from the API no longer load, using the defaults: %s",
                          exc)  # fmt: skip
        return manager

    def _store_rules_version(self, text: str, sha256: str, source: str) -> None:
        """Keep every rules text that was active, so decisions can name their version."""
        assert self.sessions is not None
        with self.sessions() as session, session.begin():
            activate_version(session, text, sha256, source)
        log.info("rules version %s from %s active", sha256[:12], source)

    def _start_retention(self) -> None:
        """With a retention period, remove old raw messages now and then (mailgw/retention.py)."""
        storage = self.config.storage
        if storage.retention_days <= 0:
            return
        assert self.sessions is not None
        run = functools.partial(
            prune,
            self.sessions,
            storage.data_dir,
            FileBlobStore.in_data_dir(storage.data_dir),
            storage.retention_days,
            stop=self.stopping.is_set,
        )
        interval = storage.prune_interval_minutes * 60
        self.tasks.append(asyncio.create_task(prune_periodically(run, interval, self.stopping)))

    def _on_spooled(self) -> None:
        if self.intake is not None:
            self.intake.accepted()
        if self.pipeline is not None:
            self.pipeline.wakeup.set()
        if self.relay is not None:
            self.relay.wakeup.set()

    def _recover(self, relay_enabled: bool, lifetime: dt.timedelta) -> None:
        assert self.sessions is not None and self.engine is not None
        with self.sessions() as session, session.begin():
            if self.engine.dialect.name == "sqlite":
                # One node owns an SQLite database: leases of a dead process can be taken now.
                session.execute(
                    update(Message).where(Message.state == PROCESSING).values(state=SPOOLED)
                )
                session.execute(
                    update(Message).where(Message.state == SENDING).values(state=QUEUED)
                )
            if relay_enabled:
                released = release_held_for_relay(session, lifetime)
                if released:
                    log.info("released %d held message(s) to the relay queue", released)

    async def _start_smtp(self) -> None:
        assert self.sessions is not None
        self.ingress = Ingress(self.config, self.sessions, self.spool)
        await self.ingress.start()
        self.listening.update(self.ingress.listening)

    async def _start_api(self) -> None:
        config = self.config
        if config.api.listen is None:
            return
        assert self.sessions is not None
        app = create_app(
            self.sessions,
            config.storage.data_dir,
            config.storage.min_free_mb,
            rules=self.rules,
            timezone=config.registry.timezone,
            relay_lifetime=dt.timedelta(hours=config.relay.max_lifetime_hours),
            forget_logins=self.ingress.credentials.clear,
            units=config.registry.units,
            notifier=Notifier(templates_for(config), self.spool, Outgoing.from_config(config)),
        )
        self.api_server = api_server(
            app, config.api.listen.host, config.api.listen.port,
            tls_cert=config.api.tls_cert, tls_key=config.api.tls_key,
        )  # fmt: skip
        self.tasks.append(asyncio.create_task(self.api_server.serve()))
        for _ in range(200):
            if self.api_server.started:
                break
            await asyncio.sleep(0.02)
        if self.api_server.servers:
            sock = self.api_server.servers[0].sockets[0].getsockname()
            self.listening["api"] = (sock[0], sock[1])
            log.info("API on %s:%s", sock[0], sock[1])

    async def shutdown(self) -> None:
        """Stop accepting (421), let what is in flight finish, stop the workers."""
        log.info("shutting down")
        await self.ingress.drain(SHUTDOWN_GRACE_SECONDS)
        self.stopping.set()
        self.rules_watch.cancel()
        if self.pipeline_processes is not None:
            await self.pipeline_processes.stop(SHUTDOWN_GRACE_SECONDS)
        if self.api_server is not None:
            self.api_server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*self.tasks, return_exceptions=True), SHUTDOWN_GRACE_SECONDS
            )
        self.spool.close()
        if self.engine is not None:
            self.engine.dispose()
        log.info("stopped")

    async def serve_forever(self, on_reload: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP calls ``on_reload``."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        loop.add_signal_handler(signal.SIGHUP, on_reload or self.rules.request_reload)
        await done.wait()
        await self.shutdown()
