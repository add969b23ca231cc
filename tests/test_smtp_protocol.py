"""The per-connection protocol built from a listener's template is the one aiosmtpd builds."""

from __future__ import annotations

import asyncio

import pytest

from mailgw.smtp.policy import ConnectionCounter, Networks, RateLimiter
from mailgw.smtp.server import (
    GatewayHandler,
    GatewaySMTP,
    IngressPolicy,
    ListenerKind,
    _template_of,
)

KINDS = [
    ListenerKind("relay"),
    ListenerKind("submission", auth=True),
    ListenerKind("smtps", implicit_tls=True, auth=True),
]


class HandlerWithOAuth(GatewayHandler):
    async def auth_XOAUTH2(self, server, args):  # a mechanism the handler brings
        return None


def handler() -> GatewayHandler:
    policy = IngressPolicy(
        hostname="mailgw.test",
        domains=["example.gov.vn"],
        trusted=Networks(["127.0.0.0/8"]),
        max_message_size=1 << 20,
        max_recipients=10,
        connections=ConnectionCounter(10, 5),
        rate=RateLimiter(0),
    )
    return HandlerWithOAuth(spool=None, policy=policy)  # type: ignore[arg-type]


def protocols(kind: ListenerKind) -> tuple[GatewaySMTP, GatewaySMTP]:
    """(built by aiosmtpd's own constructor, built from the template of another such one)."""
    loop = asyncio.get_running_loop()
    gateway = handler()
    make = lambda **kw: GatewaySMTP(gateway, kind, None, timeout=30, loop=loop, **kw)  # noqa: E731
    template = _template_of(make())
    return make(), make(template=template)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_templated_protocol_has_the_stock_attributes(kind: ListenerKind) -> None:
    stock, fast = protocols(kind)
    assert set(vars(fast)) == set(vars(stock)) | {"command_size_limits"}
    made_per_connection = {"_smtp_methods", "_auth_methods", "_closed", "_drain_waiters"}
    for name, value in vars(stock).items():
        if name.startswith(("_stream_reader", "_strong_reader")):
            assert vars(fast)[name] is not value, f"{name} shared between connections"
        elif getattr(value, "__self__", None) is stock:  # a method bound to the connection
            assert vars(fast)[name].__self__ is fast, name
        elif name not in made_per_connection:
            assert vars(fast)[name] == value, name


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_templated_protocol_binds_commands_and_auth_to_itself(kind: ListenerKind) -> None:
    stock, fast = protocols(kind)
    assert dict(fast._smtp_methods).keys() == stock._smtp_methods.keys()
    for command, method in fast._smtp_methods.items():
        assert method.__self__ is fast
        assert method.__func__ is stock._smtp_methods[command].__func__
    assert fast._smtp_methods.get("NOSUCH") is None
    assert fast._auth_methods.keys() == stock._auth_methods.keys()
    builtin = ["LOGIN", "PLAIN"] if kind.auth else []
    assert sorted(fast._auth_methods) == [*builtin, "XOAUTH2"]
    for name in builtin:
        assert fast._auth_methods[name].is_builtin
        assert fast._auth_methods[name].method.__self__ is fast
    oauth = fast._auth_methods["XOAUTH2"]
    assert not oauth.is_builtin and oauth.method == stock._auth_methods["XOAUTH2"].method


async def test_ehlo_size_allowance_is_per_connection() -> None:
    """aiosmtpd raises MAIL's line limit on every EHLO in a dict shared by all connections;
    a templated connection keeps its own."""
    _, first = protocols(KINDS[0])
    _, second = protocols(KINDS[0])
    first.command_size_limits["MAIL"] += 36
    assert second.command_size_limits["MAIL"] == GatewaySMTP.command_size_limit
