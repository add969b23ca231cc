"""A bare aiosmtpd 1.4.6 server that stores nothing: the ceiling for "aiosmtpd + asyncio".

Stock ``aiosmtpd.smtp.SMTP`` (its own line-by-line DATA reader), one protocol per connection
through ``loop.create_server``, and a handler whose ``handle_DATA`` answers 250 at once. No
spool file, no fsync, no database, no logging: what is left is the cost of the SMTP dialogue
and of moving the bytes through asyncio. bench/smtp_throughput.py compares mailgw against it.

Usage: .venv/bin/python bench/bare_aiosmtpd.py [--host 127.0.0.1] [--port 2529]
Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiosmtpd.smtp import SMTP, Envelope, Session


class DiscardHandler:
    """Accept every recipient and every message, keep nothing."""

    def __init__(self) -> None:
        self.accepted = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.accepted += 1
        return "250 2.0.0 OK: discarded"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2529)
    args = parser.parse_args()
    # aiosmtpd logs every session at INFO ("mail.log"); like mailgw's benchmark config, WARNING.
    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.get_running_loop()
    handler = DiscardHandler()

    def factory() -> SMTP:
        # A fixed hostname: otherwise every connection calls socket.getfqdn() (a DNS lookup).
        return SMTP(
            handler,
            hostname="bare.localdomain",
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=50 * 1024 * 1024,  # mailgw's default max_message_size
            loop=loop,
        )

    server = await loop.create_server(
        factory, host=args.host, port=args.port, reuse_address=True, backlog=512
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare aiosmtpd listening on {args.host}:{args.port}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    print(f"bare aiosmtpd: {handler.accepted} message(s) accepted", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
