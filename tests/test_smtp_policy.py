"""The pure parts of SMTP ingress: policy decisions, line endings, address parsing."""

from __future__ import annotations

import string

from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from mailgw.smtp.policy import (
    ConnectionCounter,
    Networks,
    RateLimiter,
    check_recipient,
    dot_unstuff,
    find_bare_line_ending,
    is_internal,
)
from mailgw.smtp.server import _PLAIN_ANGLE_ADDR, GatewaySMTP


def test_networks() -> None:
    nets = Networks(["127.0.0.0/8", "10.20.0.0/16", "::1/128"])
    assert nets.contains("127.0.0.1") and nets.contains("10.20.7.143")
    assert nets.contains("::1") and nets.contains("::ffff:10.20.1.1")
    assert not nets.contains("10.21.0.1") and not nets.contains("garbage")
    assert not nets.contains(None) and not Networks([]).contains("127.0.0.1")


def test_internal_domains_include_subdomains_only() -> None:
    domains = ["quangngai.gov.vn"]
    assert is_internal("a@quangngai.gov.vn", domains)
    assert is_internal("a@STTTT.QuangNgai.gov.vn.", domains)
    assert not is_internal("a@evilquangngai.gov.vn", domains)
    assert not is_internal("a@quangngai.gov.vn.evil.com", domains)


def test_check_recipient() -> None:
    args = {"domains": ["x.gov.vn"], "trusted": False, "authenticated": False, "maximum": 2}
    assert check_recipient("a@x.gov.vn", count=0, **args).ok
    assert check_recipient("a@y.com", count=0, **args).reply.startswith("550 5.7.1")
    assert check_recipient("a@y.com", count=0, **{**args, "authenticated": True}).ok
    assert check_recipient("a@y.com", count=0, **{**args, "trusted": True}).ok
    assert check_recipient("a@x.gov.vn", count=2, **args).reply.startswith("452")
    assert check_recipient("nobody", count=0, **args).reply.startswith("553")


def test_line_endings_and_unstuffing() -> None:
    assert find_bare_line_ending(b"a\r\nb\r\n") is None
    assert find_bare_line_ending(b"a\nb\r\n") == "bare LF"
    assert find_bare_line_ending(b"a\rb\r\n") == "bare CR"
    assert find_bare_line_ending(b"a\r\n.\n") == "bare LF"
    assert dot_unstuff(b"..a\r\nb\r\n...c\r\n") == b".a\r\nb\r\n..c\r\n"


@given(st.lists(st.text(alphabet="ab.\r\n", max_size=8), max_size=6))
def test_unstuff_inverts_stuffing(lines: list[str]) -> None:
    body = b"".join(line.replace("\r", "").replace("\n", "").encode() + b"\r\n" for line in lines)
    stuffed = b"".join(
        (b"." + ln if ln.startswith(b".") else ln) for ln in body.splitlines(keepends=True)
    )
    assert dot_unstuff(stuffed) == body


def test_connection_counter_and_rate_limiter() -> None:
    counter = ConnectionCounter(maximum=3, per_client=2)
    assert counter.open("a") is None and counter.open("a") is None
    assert counter.open("a").startswith("421")
    assert counter.open("b") is None
    assert counter.open("c").startswith("421")
    counter.close("a")
    assert counter.open("c") is None
    limiter = RateLimiter(2, window=60)
    assert limiter.allow("a", now=0) and limiter.allow("a", now=1)
    assert not limiter.allow("a", now=2) and limiter.allow("b", now=2)
    assert limiter.allow("a", now=61)


ATOM = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


@given(
    st.from_regex(
        r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[A-Za-z0-9_-]{1,5}){0,2}", fullmatch=True
    ),
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8}){0,3}", fullmatch=True),
    st.sampled_from(["", " SIZE=1000", " BODY=8BITMIME SMTPUTF8"]),
)
def test_fast_address_path_agrees_with_aiosmtpd(local: str, domain: str, rest: str) -> None:
    from email._header_value_parser import get_angle_addr

    arg = f"<{local}@{domain}>{rest}"
    server = GatewaySMTP.__new__(GatewaySMTP)  # only _getaddr is used
    server.local_part_limit = 0
    assert server._getaddr(arg) == SMTP._getaddr(server, arg)
    match = _PLAIN_ANGLE_ADDR.match(arg)
    assert match is not None
    address, expected_rest = get_angle_addr(arg)
    assert (match.group(1), arg[match.end() :].lstrip()) == (address.addr_spec, expected_rest)
