"""The pipeline stage that registers a message's documents (after the rules, before trace)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from mailgw.config import RegistryConfig
from mailgw.pipeline import Job, Stage
from mailgw.registry.blobs import BlobStore
from mailgw.registry.register import Registered, fields_of, register_message, target_registers

log = logging.getLogger(__name__)

HEADER = "X-Mailgw-Register"


def header_value(results: list[Registered]) -> str:
    """``default 2026/17, 2026/18; confidential 2026/3`` (one number per document)."""
    by_register: dict[str, list[str]] = {}
    for r in results:
        numbers = by_register.setdefault(r.register, [])
        if f"{r.year}/{r.number}" not in numbers:
            numbers.append(f"{r.year}/{r.number}")
    return "; ".join(f"{name} {', '.join(numbers)}" for name, numbers in by_register.items())


def register_stage(
    sessions: sessionmaker[Session], store: BlobStore, settings: RegistryConfig
) -> Stage:
    def run(job: Job) -> None:
        assert job.parsed is not None, "the parse stage runs first"
        if job.bounce_reason:  # refused by a rule: not received, not registered
            return
        facts = job.parsed.facts
        registers = target_registers(
            job.registers, job.category, facts.confidentiality, settings.register
        )
        if not registers:
            return
        results = register_message(
            sessions, store, registers,
            message_row_id=job.id, arrival=job.received_at, raw=job.raw, parsed=job.parsed,
            fields=fields_of(job.parsed, job.rcpt_to, settings.units),
            signature=job.signature, timezone=settings.timezone,
        )  # fmt: skip
        job.registered = results
        if results:
            job.headers.append((HEADER, header_value(results)))
            log.info("%s: registered %s", job.queue_id, header_value(results))

    return run
