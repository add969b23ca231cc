"""``GET /metrics``: Prometheus text format. The process's counters and histograms
(mailgw/metrics.py) and, read from the database at each scrape, the queue depth by state and
the number of documents in each register."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from mailgw import metrics
from mailgw.api.auth import Caller, require
from mailgw.api.common import AUTH_ERRORS, readers_of
from mailgw.registry.models import RegisterEntry
from mailgw.stats import counts_by_state

router = APIRouter(tags=["operations"])

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _DatabaseCollector:
    """Gauges computed from the database (one snapshot per scrape)."""

    def __init__(self, request: Request):
        self.request = request

    def collect(self):  # type: ignore[no-untyped-def]
        with readers_of(self.request)() as session:
            states = counts_by_state(session)
            registers = session.execute(
                select(RegisterEntry.register, func.count())
                .where(RegisterEntry.revision == 0)
                .group_by(RegisterEntry.register)
            ).all()
        queue = GaugeMetricFamily(
            "mailgw_queue_messages", "Messages in the database by state.", labels=["state"]
        )
        for state, n in states.items():
            queue.add_metric([state], n)
        yield queue
        docs = GaugeMetricFamily(
            "mailgw_register_documents",
            "Documents registered (register numbers given), by register.",
            labels=["register"],
        )
        for register, n in registers:
            docs.add_metric([register], n)
        yield docs


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **AUTH_ERRORS,
    },
)
def prometheus_metrics(
    request: Request, caller: Caller = Depends(require("service", "auditor"))
) -> Response:
    """Counters (accepted, relayed, deferred, bounced, processed), the processing latency and
    per-stage histograms (stage="rules": rule evaluation), queue depths by state and
    registered documents by register. A bearer token is needed, as for /status."""
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_DatabaseCollector(request))
    body = metrics.exposition(request.app.state.data_dir) + generate_latest(snapshot)
    return Response(content=body, media_type=CONTENT_TYPE)
