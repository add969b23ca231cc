"""Process-wide Prometheus metrics: the counters and histograms the pipeline, the relay and the
spool update, and the text exposition served by ``GET /metrics``.

Counters are per gateway node (each counts what it did, as Prometheus expects); the queue
depths and register sizes are read from the database at scrape time (see
mailgw/api/metrics_routes.py), so they are the same on every node. Pipeline processes (see
mailgw/worker.py) count in prometheus_client's multiprocess files under ``<data_dir>/metrics``
(``child_environment``), and ``exposition`` adds them to the gateway's own figures.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

CHILD_METRICS_DIR = "metrics"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY = CollectorRegistry(auto_describe=True)

ACCEPTED = Counter(
    "mailgw_messages_accepted",
    "Messages made durable in the spool (250 sent), by origin (smtp, imap, local).",
    ["origin"],
    registry=REGISTRY,
)
RELAYED = Counter(
    "mailgw_messages_relayed", "Messages accepted downstream for every recipient.",
    registry=REGISTRY,
)  # fmt: skip
DEFERRED = Counter(
    "mailgw_messages_deferred", "Relay attempts that left recipients to retry later.",
    registry=REGISTRY,
)  # fmt: skip
BOUNCED = Counter(
    "mailgw_messages_bounced", "Messages finished with a permanent failure (DSN sent).",
    registry=REGISTRY,
)  # fmt: skip
PROCESSED = Counter(
    "mailgw_messages_processed", "Messages the pipeline finished processing.", registry=REGISTRY
)
PROCESSING_FAILED = Counter(
    "mailgw_processing_failures", "Pipeline runs that failed (the message is retried).",
    registry=REGISTRY,
)  # fmt: skip

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PROCESSING_SECONDS = Histogram(
    "mailgw_processing_seconds",
    "Time to run every pipeline stage on one message.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "mailgw_stage_seconds",
    "Time spent in one pipeline stage (stage=rules is the rule evaluation time).",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, *_LATENCY_BUCKETS),
    registry=REGISTRY,
)


def stage_name(stage: object) -> str:
    """``rules`` for ``rules_stage`` or a closure made by ``rules_stage(...)``."""
    name = getattr(stage, "__qualname__", None) or type(stage).__name__
    name = name.split(".", 1)[0]
    return name.removesuffix("_stage") or "stage"


_OUTCOMES = {"relayed": RELAYED, "bounced": BOUNCED, "deferred": DEFERRED}


def relay_outcome(state: object) -> None:
    """Count a relay attempt that left a message ``relayed``, ``bounced`` or ``deferred``."""
    counter = _OUTCOMES.get(state)  # type: ignore[call-overload]
    if counter is not None:
        counter.inc()


def child_metrics_dir(data_dir: Path) -> Path:
    return data_dir / CHILD_METRICS_DIR


def reset_child_metrics(data_dir: Path) -> None:
    """At gateway start: the figures of earlier runs' processes go (counters restart at 0)."""
    folder = child_metrics_dir(data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


@contextmanager
def child_environment(data_dir: Path) -> Iterator[None]:
    """While starting a child process: it will count in multiprocess files (prometheus_client
    reads the variable when a process first imports it; this process has already)."""
    before = os.environ.get(_MULTIPROC_ENV)
    os.environ[_MULTIPROC_ENV] = str(child_metrics_dir(data_dir))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_MULTIPROC_ENV, None)
        else:
            os.environ[_MULTIPROC_ENV] = before


class _Merged:
    """This process's metrics plus those of its child processes, one family per name."""

    def __init__(self, folder: Path):
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {m.name: m for m in REGISTRY.collect()}
        if self.folder.is_dir() and any(self.folder.glob("*.db")):
            for child in MultiProcessCollector(None, str(self.folder)).collect():
                own = families.get(child.name)
                if own is None:
                    continue  # only the metrics this module defines
                totals: dict[tuple, float] = {}
                for sample in (*own.samples, *child.samples):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
                merged = Metric(own.name, own.documentation, own.type)
                for (name, labels), value in totals.items():
                    merged.add_sample(name, dict(labels), value)
                families[own.name] = merged
        yield from families.values()


def exposition(data_dir: Path) -> bytes:
    """The text format of every counter and histogram, children included."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(child_metrics_dir(data_dir)))
    return generate_latest(registry)
