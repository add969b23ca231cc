"""Start ``mailgw serve`` with parts switched off, to split the cost of acceptance (experiments).

VARIANT (env), comma-separated:
  no-pipeline   the pipeline workers never run: only SMTP + spool + group commit
  no-parse      the pipeline runs (claim, load, mark held) but without the MIME parse stage
  switch=SEC    sys.setswitchinterval(SEC) (default 0.005): how long a thread that released
                the GIL for a syscall may wait to get it back from a CPU-bound thread

Usage: VARIANT=no-pipeline .venv/bin/python bench/mailgw_variant.py serve -c FILE
Used by smtp_throughput.py when MAILGW_VARIANT is set; never for the reference numbers.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mailgw import app, cli, pipeline

variant = set(filter(None, os.environ.get("VARIANT", "").split(",")))

for item in variant:
    if item.startswith("switch="):
        sys.setswitchinterval(float(item.split("=", 1)[1]))

if "no-pipeline" in variant:

    async def _idle(self, stopping: asyncio.Event) -> None:
        await stopping.wait()

    pipeline.Pipeline.run = _idle  # type: ignore[method-assign]

if "no-parse" in variant:
    _init = app.Gateway.__init__

    def _init_no_parse(self, config, stages=None):  # type: ignore[no-untyped-def]
        _init(self, config, stages=[pipeline.trace_stage])

    app.Gateway.__init__ = _init_no_parse  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
