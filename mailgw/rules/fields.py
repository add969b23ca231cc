"""The fields a condition can test, and the per-evaluation state that computes them once.

Each field has a kind (text, number, bool, date, ip) and is single- or multi-valued. A condition
on a multi-valued field holds when it holds for *any* of the values (e.g. any recipient, any
attachment name). Values are computed on first use in an evaluation and cached, folded and
unfolded separately, so a message's text is folded at most once however many rules test it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailgw.mime.model import Address, Attachment, ParsedMessage
from mailgw.rules.context import MessageContext

TEXT, NUMBER, BOOL, DATE, IP = "text", "number", "bool", "date", "ip"

_WS = re.compile(r"\s+")


def _fold_function() -> Callable[[str], str]:
    from mailgw.mime.text import fold  # the parser's folding; imported when first needed

    return fold


@functools.lru_cache(maxsize=65536)
def norm(s: str) -> str:
    """Diacritic- and case-insensitive form of ``s``: fold, then collapse runs of white space."""
    return _WS.sub(" ", _fold_function()(s)).strip()


def norm_text(s: str) -> str:
    """Like :func:`norm` without the cache (for long texts seen once: bodies, attachments)."""
    return _WS.sub(" ", _fold_function()(s)).strip()


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    multi: bool
    get: Callable[[EvalState], Any]
    doc: str = ""
    attachment: bool = False  # value of one attachment (usable inside ``any_attachment``)
    dynamic: bool = False  # depends on the decision so far: never cached


class EvalState:
    """Per-evaluation cache of field values, and the decision so far (category, tags)."""

    __slots__ = ("att", "cache", "category", "ctx", "filters", "hit_cache", "msg", "tags")

    def __init__(self, ctx: MessageContext, filters: dict[Any, Any] | None = None) -> None:
        self.ctx = ctx
        self.filters = filters or {}
        self.hit_cache: dict[Any, frozenset[int]] = {}
        self.msg: ParsedMessage = ctx.parsed
        self.cache: dict[tuple[str, bool, int], Any] = {}
        self.category: str | None = None
        self.tags: list[str] = []
        self.att = -1  # current attachment index inside ``any_attachment``

    def value(self, spec: FieldSpec, fold: bool) -> Any:
        key = (spec.name, fold, self.att if spec.attachment else -1)
        try:
            return self.cache[key]
        except KeyError:
            pass
        raw = spec.get(self)
        if fold and spec.kind == TEXT:
            if spec.multi:
                raw = [norm_text(v) for v in raw if v is not None]
            elif raw is not None:
                raw = norm_text(raw)
        if not spec.dynamic:
            self.cache[key] = raw
        return raw

    def hits(self, key: tuple[str, bool]) -> frozenset[int]:
        """Indices of the patterns of the (field, folded) filter that match this message."""
        try:
            return self.hit_cache[key]
        except KeyError:
            pass
        spec, flt = self.filters[key]
        v = self.value(spec, key[1])
        found: set[int] = set()
        for x in v if spec.multi else [v]:
            if x is not None:
                found.update(flt.Match(x) or ())
        result = self.hit_cache[key] = frozenset(found)
        return result

    def attachment(self) -> Attachment:
        return self.msg.attachments[self.att]


def _addrs(items: list[Address]) -> list[str]:
    return [a.addr for a in items]


def _full_text(st: EvalState) -> str:
    m = st.msg
    parts = [m.subject, m.body_text]
    parts.extend(a.text for a in m.attachments if a.text)
    return "\n".join(p for p in parts if p)


def _ext(name: str | None) -> str | None:
    if not name or "." not in name:
        return None
    return name.rsplit(".", 1)[1].lower()


def _iso(v: Any) -> str | None:
    return None if v is None else v.isoformat()


def _sig(key: str) -> Callable[[EvalState], Any]:
    return lambda st: (st.ctx.signature or {}).get(key)


def _cal(attr: str) -> Callable[[EvalState], Any]:
    return lambda st: getattr(st.msg.calendar, attr) if st.msg.calendar else None


def _files(st: EvalState) -> list[Attachment]:
    return [a for a in st.msg.attachments if not a.inline]


_SPECS: list[FieldSpec] = [
    # envelope and addresses
    FieldSpec("envelope.from", TEXT, False, lambda st: st.ctx.mail_from, "SMTP MAIL FROM"),
    FieldSpec("envelope.rcpt", TEXT, True, lambda st: list(st.ctx.rcpt_to), "SMTP RCPT TO"),
    FieldSpec("from", TEXT, True, lambda st: _addrs(st.msg.from_), "From: addresses"),
    FieldSpec("from.name", TEXT, True, lambda st: [a.name for a in st.msg.from_], "From: names"),
    FieldSpec(
        "from.domain", TEXT, True, lambda st: [a.domain for a in st.msg.from_], "From: domains"
    ),
    FieldSpec("to", TEXT, True, lambda st: _addrs(st.msg.to), "To: addresses"),
    FieldSpec("cc", TEXT, True, lambda st: _addrs(st.msg.cc), "Cc: addresses"),
    FieldSpec("reply_to", TEXT, True, lambda st: _addrs(st.msg.reply_to), "Reply-To: addresses"),
    FieldSpec("message_id", TEXT, False, lambda st: st.msg.message_id, "Message-ID"),
    # content
    FieldSpec("subject", TEXT, False, lambda st: st.msg.subject, "Subject"),
    FieldSpec("body", TEXT, False, lambda st: st.msg.body_text, "text body"),
    FieldSpec("text", TEXT, False, _full_text, "subject + body + all attachment texts"),
    FieldSpec("size", NUMBER, False, lambda st: st.msg.size, "raw message size in bytes"),
    FieldSpec("defects", TEXT, True, lambda st: list(st.msg.defects), "parser defects"),
    # attachments (any attachment whose ...)
    FieldSpec(
        "attachment.count", NUMBER, False, lambda st: len(_files(st)), "attached files (not inline)"
    ),
    FieldSpec(
        "attachment.name",
        TEXT,
        True,
        lambda st: [a.filename for a in st.msg.attachments if a.filename],
        "file names",
    ),
    FieldSpec(
        "attachment.extension",
        TEXT,
        True,
        lambda st: [e for a in st.msg.attachments if (e := _ext(a.filename))],
        "file name extensions, lower case, no dot",
    ),
    FieldSpec(
        "attachment.content_type",
        TEXT,
        True,
        lambda st: [a.content_type for a in st.msg.attachments],
        "content types",
    ),
    FieldSpec(
        "attachment.size",
        NUMBER,
        True,
        lambda st: [a.size for a in st.msg.attachments],
        "decoded sizes in bytes",
    ),
    FieldSpec(
        "attachment.text",
        TEXT,
        True,
        lambda st: [a.text for a in st.msg.attachments if a.text],
        "extracted texts",
    ),
    FieldSpec(
        "attachment.inline",
        BOOL,
        True,
        lambda st: [a.inline for a in st.msg.attachments],
        "inline parts",
    ),
    # document facts
    FieldSpec(
        "doc.symbol",
        TEXT,
        False,
        lambda st: st.msg.facts.symbol,
        "own number/symbol, e.g. 45/GM-UBND",
    ),
    FieldSpec(
        "doc.type",
        TEXT,
        False,
        lambda st: st.msg.facts.doc_type,
        "type code: GM, BC, QĐ, ... (none for a công văn)",
    ),
    FieldSpec(
        "doc.type_name",
        TEXT,
        False,
        lambda st: st.msg.facts.doc_type_name,
        "type name: Giấy mời, Công văn, ...",
    ),
    FieldSpec("doc.date", DATE, False, lambda st: _iso(st.msg.facts.doc_date), "document date"),
    FieldSpec("doc.issuer", TEXT, False, lambda st: st.msg.facts.issuer, "issuing agency"),
    FieldSpec("doc.summary", TEXT, False, lambda st: st.msg.facts.summary, "trích yếu"),
    FieldSpec(
        "doc.urgency",
        TEXT,
        False,
        lambda st: st.msg.facts.urgency,
        "thuong, khan, thuong_khan, hoa_toc",
    ),
    FieldSpec(
        "doc.confidentiality",
        TEXT,
        False,
        lambda st: st.msg.facts.confidentiality,
        "mat, toi_mat, tuyet_mat",
    ),
    FieldSpec(
        "doc.cited", TEXT, True, lambda st: list(st.msg.facts.cited_symbols), "cited numbers"
    ),
    FieldSpec("doc.is_reply", BOOL, False, lambda st: st.msg.facts.is_reply, "Re:, TL:, Trả lời:"),
    FieldSpec(
        "doc.is_forward", BOOL, False, lambda st: st.msg.facts.is_forward, "Fwd:, FW:, Chuyển tiếp:"
    ),
    # calendar
    FieldSpec(
        "calendar.present",
        BOOL,
        False,
        lambda st: st.msg.calendar is not None,
        "has a text/calendar part",
    ),
    FieldSpec("calendar.method", TEXT, False, _cal("method"), "REQUEST, CANCEL, ..."),
    FieldSpec("calendar.summary", TEXT, False, _cal("summary"), "SUMMARY"),
    FieldSpec("calendar.location", TEXT, False, _cal("location"), "LOCATION"),
    FieldSpec("calendar.organizer", TEXT, False, _cal("organizer"), "ORGANIZER"),
    FieldSpec("calendar.start", DATE, False, lambda st: _iso(_cal("start")(st)), "DTSTART (ISO)"),
    FieldSpec("calendar.end", DATE, False, lambda st: _iso(_cal("end")(st)), "DTEND (ISO)"),
    # client
    FieldSpec("client.addr", IP, False, lambda st: st.ctx.client_addr, "SMTP client IP address"),
    FieldSpec("client.auth_user", TEXT, False, lambda st: st.ctx.auth_user, "SMTP AUTH user"),
    FieldSpec(
        "client.authenticated",
        BOOL,
        False,
        lambda st: st.ctx.auth_user is not None,
        "AUTH succeeded",
    ),
    FieldSpec(
        "client.listener", TEXT, False, lambda st: st.ctx.listener, "relay, submission, imap, ..."
    ),
    FieldSpec("client.trusted", BOOL, False, lambda st: st.ctx.trusted, "trusted client"),
    # signature
    FieldSpec(
        "signature.present",
        BOOL,
        False,
        lambda st: st.ctx.signature is not None,
        "message is signed",
    ),
    FieldSpec(
        "signature.valid",
        BOOL,
        False,
        lambda st: bool((st.ctx.signature or {}).get("valid")),
        "signature verified",
    ),
    FieldSpec("signature.fingerprint", TEXT, False, _sig("fingerprint"), "signing key fingerprint"),
    FieldSpec("signature.uid", TEXT, False, _sig("uid"), "signing key user id"),
    FieldSpec("signature.trust", TEXT, False, _sig("trust"), "key trust level"),
    FieldSpec("signature.reason", TEXT, False, _sig("reason"), "verification note"),
    # the decision so far
    FieldSpec(
        "category",
        TEXT,
        False,
        lambda st: st.category,
        "category set by earlier rules",
        dynamic=True,
    ),
    FieldSpec(
        "tags", TEXT, True, lambda st: list(st.tags), "tags added by earlier rules", dynamic=True
    ),
]

FIELDS: dict[str, FieldSpec] = {f.name: f for f in _SPECS}

# Fields of one attachment, for conditions inside ``any_attachment``.
_ATT_SPECS = [
    FieldSpec("name", TEXT, False, lambda st: st.attachment().filename, attachment=True),
    FieldSpec("extension", TEXT, False, lambda st: _ext(st.attachment().filename), attachment=True),
    FieldSpec(
        "content_type", TEXT, False, lambda st: st.attachment().content_type, attachment=True
    ),
    FieldSpec("size", NUMBER, False, lambda st: st.attachment().size, attachment=True),
    FieldSpec("text", TEXT, False, lambda st: st.attachment().text, attachment=True),
    FieldSpec("inline", BOOL, False, lambda st: st.attachment().inline, attachment=True),
    FieldSpec("sha256", TEXT, False, lambda st: st.attachment().sha256, attachment=True),
]
ATTACHMENT_FIELDS: dict[str, FieldSpec] = {f.name: f for f in _ATT_SPECS}

_HEADER_PREFIX = "header."


@functools.lru_cache(maxsize=4096)
def _header_spec(name: str) -> FieldSpec:
    return FieldSpec(
        _HEADER_PREFIX + name, TEXT, True, lambda st: st.msg.header_all(name), f"header {name}"
    )


_HEADER_NAME = re.compile(r"[!-9;-~]+")


def resolve_field(name: str, in_attachment: bool = False) -> FieldSpec | None:
    """The field called ``name`` (``header.<Name>`` for any header), or None if unknown."""
    if in_attachment:
        short = name.removeprefix("attachment.")
        if short in ATTACHMENT_FIELDS:
            return ATTACHMENT_FIELDS[short]
    if name.lower().startswith(_HEADER_PREFIX):
        hname = name[len(_HEADER_PREFIX) :]
        return _header_spec(hname) if _HEADER_NAME.fullmatch(hname) else None
    return FIELDS.get(name)


def field_names(in_attachment: bool = False) -> list[str]:
    names = [*FIELDS, "header.<Name>"]
    return list(ATTACHMENT_FIELDS) + names if in_attachment else names
