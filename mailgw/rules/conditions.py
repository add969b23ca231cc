"""Compiled conditions: leaves (field, operator, value) and the ``all`` / ``any`` / ``not`` /
``any_attachment`` combinators. Everything that can fail (unknown operator, bad pattern, wrong
value type) fails when the rules are loaded, never while a message is evaluated.

Evaluation short-circuits. When a trace list is given, every leaf that was evaluated appends
``(leaf, result)`` to it, so a decision can show which conditions held and which did not.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from typing import Any

import re2

from mailgw.rules.fields import BOOL, DATE, IP, NUMBER, TEXT, EvalState, FieldSpec, norm

Trace = list[tuple["Node", bool]] | None

TEXT_OPS = ("equals", "contains", "starts_with", "ends_with", "matches", "glob", "in", "exists")
NUMBER_OPS = ("equals", "in", "gt", "ge", "lt", "le", "exists")
OPERATORS: dict[str, tuple[str, ...]] = {
    TEXT: TEXT_OPS,
    NUMBER: NUMBER_OPS,
    BOOL: ("equals", "exists"),
    DATE: ("equals", "in", "gt", "ge", "lt", "le", "exists"),
    IP: ("equals", "in", "in_network", "exists"),
}
ALL_OPERATORS = tuple(dict.fromkeys(op for ops in OPERATORS.values() for op in ops))

# Above this many literal needles, ``contains`` uses one linear-time re2 alternation.
_MANY = 6


class ConditionError(Exception):
    """A bad condition; ``where`` is the path below the condition (e.g. ``("matches", 1)``)."""

    def __init__(
        self, message: str, where: tuple[str | int, ...] = (), at: str = "key", offset: int = -1
    ) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.at = at
        self.offset = offset  # position of the problem inside a text value, when known


class Node:
    __slots__ = ("path",)

    def ev(self, st: EvalState, tr: Trace) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def leaves(self) -> list[Node]:
        return [self]


class AllOf(Node):
    __slots__ = ("children",)

    def __init__(self, children: list[Node]) -> None:
        self.children = children

    def ev(self, st: EvalState, tr: Trace) -> bool:
        for c in self.children:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
            if not c.ev(st, tr):
                return False
        return True

    def describe(self) -> str:
        return "all of"

    def leaves(self) -> list[Node]:
        return [leaf for c in self.children for leaf in c.leaves()]


class AnyOf(AllOf):
    __slots__ = ()

    def ev(self, st: EvalState, tr: Trace) -> bool:
        for c in self.children:  # noqa: SIM110
            if c.ev(st, tr):
                return True
        return False

    def describe(self) -> str:
        return "any of"


class NotOf(Node):
    __slots__ = ("child",)

    def __init__(self, child: Node) -> None:
        self.child = child

    def ev(self, st: EvalState, tr: Trace) -> bool:
        return not self.child.ev(st, tr)

    def describe(self) -> str:
        return "not"

    def leaves(self) -> list[Node]:
        return self.child.leaves()


class AnyAttachment(Node):
    """Holds when one attachment satisfies all of ``children`` (fields of that attachment)."""

    __slots__ = ("children",)

    def __init__(self, children: list[Node]) -> None:
        self.children = children

    def ev(self, st: EvalState, tr: Trace) -> bool:
        result = False
        saved = st.att
        try:
            for k in range(len(st.msg.attachments)):
                st.att = k
                if all(c.ev(st, None) for c in self.children):
                    result = True
                    break
        finally:
            st.att = saved
        if tr is not None:
            tr.append((self, result))
        return result

    def describe(self) -> str:
        inner = "; ".join(leaf.describe() for c in self.children for leaf in c.leaves())
        return f"any attachment whose {inner}"


class Leaf(Node):
    __slots__ = ("atom", "fold", "op", "pred", "spec", "text", "value")

    def __init__(
        self, spec: FieldSpec, op: str, value: Any, fold: bool, pred: Callable[[Any], bool]
    ) -> None:
        self.spec = spec
        self.op = op
        self.value = value
        self.fold = fold
        self.pred = pred
        self.atom: tuple[tuple[str, bool], int] | None = None  # set by the rule index
        shown = value if isinstance(value, str | bool | int | float) else list(value)
        suffix = " (exact)" if not fold and spec.kind == TEXT and op != "exists" else ""
        self.text = f"{spec.name} {op} {_show(shown)}{suffix}"

    def ev(self, st: EvalState, tr: Trace) -> bool:
        atom = self.atom
        if atom is not None:
            r = atom[1] in st.hits(atom[0])
            if tr is not None:
                tr.append((self, r))
            return r
        v = st.value(self.spec, self.fold)
        if self.op == "exists":
            present = bool(v) if self.spec.multi else v is not None and v != ""
            r = present is self.value
        elif self.spec.multi:
            r = any(self.pred(x) for x in v if x is not None)
        else:
            r = v is not None and self.pred(v)
        if tr is not None:
            tr.append((self, r))
        return r

    def describe(self) -> str:
        return self.text


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


# -- building predicates ----------------------------------------------------------------------


def _re2_options(case_sensitive: bool) -> re2.Options:
    o = re2.Options()
    o.log_errors = False
    o.case_sensitive = case_sensitive
    o.max_mem = 8 << 20
    return o


def compile_regex(pattern: str, case_sensitive: bool, where: tuple[str | int, ...]) -> Any:
    try:
        return re2.compile(pattern, _re2_options(case_sensitive))
    except re2.error as e:
        raw = e.args[0] if e.args else str(e)
        msg = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        detail, _, fragment = msg.partition(": ")
        col = pattern.find(fragment) if fragment else -1
        at = f" at position {col + 1}" if col >= 0 else ""
        raise ConditionError(
            f"bad regular expression {pattern!r}: {detail}{at} (re2 syntax; no look-around "
            "or back-references)",
            where,
            at="value",
            offset=col,
        ) from None


def _fold_pattern(pattern: str) -> str:
    """Fold the letters of a regex without touching its ASCII syntax (``\\S`` stays ``\\S``)."""
    return "".join(ch if ord(ch) < 128 else norm(ch) or ch for ch in pattern)


def glob_to_regex(pattern: str) -> str:
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1 if i < n and pattern[i] in "!^" else i)
            if j < 0:
                out.append(re2.escape("["))
                continue
            body = pattern[i:j]
            i = j + 1
            neg = body[:1] in ("!", "^")
            body = body[1:] if neg else body
            body = body.replace("\\", "\\\\").replace("]", "\\]")
            out.append("[" + ("^" if neg else "") + body + "]")
        else:
            out.append(re2.escape(c))
    return "(?s:" + "".join(out) + ")"


def _as_list(op: str, value: Any) -> list[Any]:
    if isinstance(value, list):
        if not value:
            raise ConditionError(f"'{op}' needs at least one value", (op,), at="value")
        return value
    return [value]


def _check_types(op: str, values: list[Any], types: tuple[type, ...], what: str) -> None:
    for k, v in enumerate(values):
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        if not ok:
            raise ConditionError(
                f"'{op}' expects {what}, got {type(v).__name__} {v!r}", (op, k), at="value"
            )


def _iso_value(op: str, v: Any, k: int) -> str:
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, str):
        try:
            return (
                dt.datetime.fromisoformat(v) if "T" in v else dt.date.fromisoformat(v)
            ).isoformat()
        except ValueError:
            pass
    raise ConditionError(
        f"'{op}' expects a date like 2026-03-12 (or a date-time), got {v!r}", (op, k), at="value"
    )


def build_leaf(spec: FieldSpec, op: str, value: Any, exact: bool) -> Leaf:
    kind = spec.kind
    if op not in OPERATORS[kind]:
        raise ConditionError(
            f"operator '{op}' does not apply to {kind} field '{spec.name}' "
            f"(use one of: {', '.join(OPERATORS[kind])})",
            (op,),
        )
    if op == "exists":
        if not isinstance(value, bool):
            raise ConditionError("'exists' expects true or false", (op,), at="value")
        return Leaf(spec, op, value, True, lambda v: True)
    fold = kind == TEXT and not exact
    pred: Callable[[Any], bool]
    if kind == TEXT:
        pred, value = _text_pred(op, value, fold)
    elif kind == NUMBER:
        pred = _number_pred(op, value)
    elif kind == BOOL:
        _check_types(op, [value], (bool,), "true or false")
        want = value
        pred = lambda v: bool(v) is want  # noqa: E731
    elif kind == DATE:
        pred, value = _date_pred(op, value)
    else:
        pred = _ip_pred(op, value)
    return Leaf(spec, op, value, fold, pred)


def _text_pred(op: str, value: Any, fold: bool) -> tuple[Callable[[Any], bool], Any]:
    values = _as_list(op, value)
    _check_types(op, values, (str,), "text")
    prep: list[str] = (
        [norm(v) for v in values] if fold and op not in ("matches", "glob") else values
    )
    if op in ("equals", "in"):
        wanted = frozenset(prep)
        return wanted.__contains__, value
    if op == "contains":
        if len(prep) == 1:
            needle = prep[0]
            return (lambda v: needle in v), value
        if len(prep) <= _MANY:
            needles = tuple(prep)
            return (lambda v: any(n in v for n in needles)), value
        rx = re2.compile("|".join(re2.escape(n) for n in prep), _re2_options(True))
        return (lambda v: rx.search(v) is not None), value
    if op == "starts_with":
        prefixes = tuple(prep)
        return (lambda v: v.startswith(prefixes)), value
    if op == "ends_with":
        suffixes = tuple(prep)
        return (lambda v: v.endswith(suffixes)), value
    if op == "matches":
        sources = []
        for k, p in enumerate(values):
            src = _fold_pattern(p) if fold else p
            compile_regex(src, not fold, (op, k) if isinstance(value, list) else (op,))
            sources.append(src)
        combined = sources[0] if len(sources) == 1 else "|".join(f"(?:{s})" for s in sources)
        rx = compile_regex(combined, not fold, (op,))
        return (lambda v: rx.search(v) is not None), value
    if op == "glob":
        srcs = [glob_to_regex(norm(p) if fold else p) for p in values]
        rx = compile_regex("|".join(srcs), True, (op,))
        return (lambda v: rx.fullmatch(v) is not None), value
    raise ConditionError(f"unknown operator '{op}'", (op,))  # pragma: no cover


def _number_pred(op: str, value: Any) -> Callable[[Any], bool]:
    if op in ("equals", "in"):
        values = _as_list(op, value)
        _check_types(op, values, (int, float), "a number")
        wanted = frozenset(values)
        return wanted.__contains__
    _check_types(op, [value], (int, float), "a number")
    limit = value
    return {
        "gt": lambda v: v > limit,
        "ge": lambda v: v >= limit,
        "lt": lambda v: v < limit,
        "le": lambda v: v <= limit,
    }[op]


def _date_pred(op: str, value: Any) -> tuple[Callable[[Any], bool], Any]:
    if op in ("equals", "in"):
        values = [_iso_value(op, v, k) for k, v in enumerate(_as_list(op, value))]
        wanted = frozenset(values)
        return (lambda v: v in wanted or v[:10] in wanted), values
    limit = _iso_value(op, value, 0)
    return {
        "gt": lambda v: v > limit,
        "ge": lambda v: v >= limit,
        "lt": lambda v: v < limit,
        "le": lambda v: v <= limit,
    }[op], limit


def _ip_pred(op: str, value: Any) -> Callable[[Any], bool]:
    values = _as_list(op, value)
    _check_types(op, values, (str,), "text")
    if op in ("equals", "in"):
        addrs = []
        for k, v in enumerate(values):
            try:
                addrs.append(ipaddress.ip_address(v))
            except ValueError:
                raise ConditionError(f"not an IP address: {v!r}", (op, k), at="value") from None
        wanted = frozenset(addrs)
        return lambda v: _ip(v) in wanted
    nets = []
    for k, v in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ConditionError(
                f"not a network in CIDR notation: {v!r}", (op, k), at="value"
            ) from None
    return lambda v: (a := _ip(v)) is not None and any(a in n for n in nets)


def _ip(v: str) -> Any:
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        return None
