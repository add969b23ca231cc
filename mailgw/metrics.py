"""Process-wide Prometheus metrics: the counters and histograms the pipeline, the relay and the
spool update, and the text exposition served by ``GET /metrics``.

Counters are per process (each gateway node counts what it did, as Prometheus expects); the
queue depths and register sizes are read from the database at scrape time (see
mailgw/api/metrics_routes.py), so they are the same on every node.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
