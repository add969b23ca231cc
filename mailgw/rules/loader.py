"""Load a TOML rules file into a :class:`RuleSet`, reporting every problem with its line and column.

See docs/rules.md for the format. ``load_rules`` raises :class:`RulesError` listing all problems
found (syntax errors stop at the first one, as TOML parsing cannot go on past it).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mailgw.mime.model import CATEGORIES
from mailgw.rules import actions as act
from mailgw.rules.conditions import (
    ALL_OPERATORS,
    AllOf,
    AnyAttachment,
    AnyOf,
    ConditionError,
    Node,
    NotOf,
    build_leaf,
)
from mailgw.rules.fields import field_names, resolve_field
from mailgw.rules.locate import Path as KeyPath
from mailgw.rules.locate import Positions, scan_positions
from mailgw.rules.problems import Problem, RulesError
from mailgw.rules.ruleset import Rule, RuleSet

DEFAULT_INCLUDE = "default"
DEFAULT_SOURCE = "<default rules>"

_TOP_KEYS = ("description", "include", "disable", "rule")
_RULE_KEYS = ("name", "description", "enabled", "replace", "before", "when", "then")
_THEN_KEYS = (
    "category",
    "override",
    "tags",
    "set_header",
    "add_header",
    "register",
    "notify",
    "add_recipients",
    "hold",
    "bounce",
    "stop",
)
_COMBINATORS = ("all", "any", "not", "any_attachment")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")
_SYNTAX_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def default_rules_text() -> str:
    return resources.files("mailgw.rules").joinpath("default.toml").read_text(encoding="utf-8")


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _FileLoader:
    """Validates and compiles one file's data; problems go to the shared list."""

    def __init__(self, loader: _Loader, source: str, text: str, pos: Positions) -> None:
        self.loader = loader
        self.source = source
        self.text = text
        self.pos = pos

    def problem(self, path: KeyPath, message: str, at: str = "key", offset: int = -1) -> None:
        line, col = self.pos.where(path, at)
        if offset >= 0 and at == "value":
            # point inside a one-line string value: skip the opening quote
            start = self.pos.values.get(tuple(path))
            if start is not None and self.text[start : start + 1] in ("'", '"'):
                literal = self.text[start + 1 : start + 1 + offset]
                if "\n" not in literal and "\\" not in literal:
                    col += 1 + offset
        self.loader.problems.append(Problem(self.source, line, col, message))

    def line_of(self, path: KeyPath) -> int:
        return self.pos.where(path)[0]

    # -- typed getters -----------------------------------------------------------------------
    def want(self, data: Any, path: KeyPath, types: tuple[type, ...], what: str) -> bool:
        ok = isinstance(data, types) and not (isinstance(data, bool) and bool not in types)
        if not ok:
            self.problem(path, f"'{path[-1]}' must be {what}, not {_tname(data)}", at="value")
        return ok

    def str_list(self, data: Any, path: KeyPath, allow_empty: bool = False) -> list[str] | None:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list):
            self.problem(path, f"'{path[-1]}' must be text or a list of text", at="value")
            return None
        ok = True
        for k, v in enumerate(items):
            if not isinstance(v, str) or (not v.strip() and not allow_empty):
                self.problem((*path, k), f"'{path[-1]}' entries must be non-empty text", "value")
                ok = False
        if not items:
            self.problem(path, f"'{path[-1]}' must not be empty", at="value")
            ok = False
        return items if ok else None

    def unknown_keys(
        self, data: dict[str, Any], path: KeyPath, allowed: tuple[str, ...], where: str
    ) -> None:
        for key in data:
            if key not in allowed:
                self.problem(
                    (*path, key),
                    f"unknown key '{key}' in {where}{_suggest(key, allowed)}; "
                    f"allowed: {', '.join(allowed)}",
                )

    # -- conditions --------------------------------------------------------------------------
    def condition(self, data: Any, path: KeyPath, in_att: bool = False) -> Node | None:
        if isinstance(data, list):  # a list is an implicit `all`
            return self.combine(data, path, AllOf, in_att, "when")
        if not isinstance(data, dict):
            self.problem(
                path,
                'a condition must be a table such as { field = "subject", contains = "giấy mời" }'
                f", not {_tname(data)}",
                at="value",
            )
            return None
        combos = [k for k in data if k in _COMBINATORS]
        if combos:
            if len(data) != 1:
                extra = [k for k in data if k != combos[0]]
                self.problem(
                    (*path, extra[0]),
                    f"'{combos[0]}' must stand alone in its condition table; move "
                    f"'{extra[0]}' into a separate condition",
                )
                return None
            key = combos[0]
            sub = data[key]
            if key == "not":
                child = self.condition(sub, (*path, key), in_att)
                return NotOf(child) if child is not None else None
            if key == "any_attachment":
                if in_att:
                    self.problem((*path, key), "'any_attachment' cannot be nested")
                    return None
                inner = self.combine(
                    sub if isinstance(sub, list) else [sub], (*path, key), AllOf, True, key
                )
                return AnyAttachment(inner.children) if isinstance(inner, AllOf) else None
            return self.combine(sub, (*path, key), AllOf if key == "all" else AnyOf, in_att, key)
        return self.leaf(data, path, in_att)

    def combine(
        self, items: Any, path: KeyPath, cls: type[AllOf], in_att: bool, key: str
    ) -> Node | None:
        if not isinstance(items, list) or not items:
            self.problem(path, f"'{key}' must be a non-empty list of conditions", at="value")
            return None
        children = [self.condition(item, (*path, k), in_att) for k, item in enumerate(items)]
        if any(c is None for c in children):
            return None
        return cls([c for c in children if c is not None])

    def leaf(self, data: dict[str, Any], path: KeyPath, in_att: bool) -> Node | None:
        if "field" not in data:
            ops = [k for k in data if k in ALL_OPERATORS]
            hint = f" for '{ops[0]}'" if ops else ""
            self.problem(
                path,
                f"condition has no 'field'{hint}; expected 'field' with one operator, or one of "
                f"{', '.join(_COMBINATORS)}",
            )
            return None
        fname = data["field"]
        if not self.want(fname, (*path, "field"), (str,), "text"):
            return None
        spec = resolve_field(fname, in_att)
        if spec is None:
            names = field_names(in_att)
            hint = _suggest(fname, names) or f"; fields: {', '.join(names)}"
            self.problem((*path, "field"), f"unknown field '{fname}'{hint}", at="value")
            return None
        exact = data.get("exact", False)
        if not self.want(exact, (*path, "exact"), (bool,), "true or false"):
            return None
        ops = [k for k in data if k not in ("field", "exact")]
        bad = [k for k in ops if k not in ALL_OPERATORS]
        for k in bad:
            hint = _suggest(k, ALL_OPERATORS) or f"; operators: {', '.join(ALL_OPERATORS)}"
            self.problem((*path, k), f"unknown operator '{k}'{hint}")
        if bad:
            return None
        if len(ops) != 1:
            self.problem(
                (*path, ops[1]) if ops else path,
                "a condition needs exactly one operator"
                + (f", found {', '.join(ops)}; combine them with all = [...]" if ops else ""),
            )
            return None
        op = ops[0]
        try:
            return build_leaf(spec, op, data[op], exact)
        except ConditionError as e:
            self.problem((*path, *e.where), e.message, at=e.at, offset=e.offset)
            return None

    # -- actions -----------------------------------------------------------------------------
    def then(self, data: Any, path: KeyPath, name: str) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.problem(path, f"'then' must be a table, not {_tname(data)}", at="value")
            return None
        self.unknown_keys(data, path, _THEN_KEYS, "[rule.then]")
        out: dict[str, Any] = {"actions": [], "tags": (), "category": None}
        ok = True

        def p(key: str) -> KeyPath:
            return (*path, key)

        if "category" in data:
            cat = data["category"]
            if self.want(cat, p("category"), (str,), "text"):
                if cat in CATEGORIES:
                    out["category"] = cat
                else:
                    ok = False
                    self.problem(
                        p("category"),
                        f"unknown category '{cat}'{_suggest(cat, CATEGORIES)}; categories: "
                        f"{', '.join(CATEGORIES)}",
                        at="value",
                    )
        for flag in ("override", "stop"):
            if flag in data:
                ok &= self.want(data[flag], p(flag), (bool,), "true or false")
                out[flag] = data[flag] is True
        if out.get("override") and out["category"] is None:
            self.problem(p("override"), "'override' needs a 'category' in the same rule")
            ok = False
        if "tags" in data:
            tags = self.str_list(data["tags"], p("tags"))
            ok &= tags is not None
            out["tags"] = tuple(tags or ())
        for key, cls in (("set_header", act.SetHeader), ("add_header", act.AddHeader)):
            if key in data:
                ok &= self.headers(data[key], p(key), name, cls, out["actions"])
        if "register" in data:
            reg = data["register"]
            regs = ["default"] if reg is True else self.str_list(reg, p("register"))
            if reg is False:
                regs = []
            ok &= regs is not None
            out["actions"].extend(act.Register(name, r) for r in regs or [])
        if "notify" in data:
            ok &= self.notify(data["notify"], p("notify"), name, out["actions"])
        if "add_recipients" in data:
            rcpts = self.addresses(data["add_recipients"], p("add_recipients"))
            ok &= rcpts is not None
            if rcpts:
                out["actions"].append(act.AddRecipients(name, tuple(rcpts)))
        for key, acls in (("hold", act.Hold), ("bounce", act.Bounce)):
            if key in data:
                reason = data[key]
                if reason is True:
                    reason = f"{key} by rule {name}"
                if self.want(reason, p(key), (str,), "a reason (text)"):
                    out["actions"].append(acls(name, reason))
                else:
                    ok = False
        if ok and not (out["category"] or out["tags"] or out["actions"] or out.get("stop")):
            self.problem(path, f"rule '{name}' does nothing: give it a category, tags or actions")
            ok = False
        return out if ok else None

    def headers(
        self, data: Any, path: KeyPath, rule: str, cls: type, sink: list[act.Action]
    ) -> bool:
        if not isinstance(data, dict) or not data:
            self.problem(path, f"'{path[-1]}' must be a table of header = \"value\"", at="value")
            return False
        ok = True
        for hname, value in data.items():
            if not _HEADER_NAME.fullmatch(hname):
                self.problem((*path, hname), f"invalid header name '{hname}'")
                ok = False
            elif not isinstance(value, str) or "\r" in value or "\n" in value:
                self.problem((*path, hname), "header value must be one line of text", at="value")
                ok = False
            else:
                sink.append(cls(rule, hname, value))
        return ok

    def addresses(self, data: Any, path: KeyPath) -> list[str] | None:
        items = self.str_list(data, path)
        if items is None:
            return None
        for k, a in enumerate(items):
            if not _ADDRESS.fullmatch(a):
                self.problem((*path, k), f"not an e-mail address: {a!r}", at="value")
                return None
        return items

    def notify(self, data: Any, path: KeyPath, rule: str, sink: list[act.Action]) -> bool:
        items = data if isinstance(data, list) else [data]
        ok = True
        for k, item in enumerate(items):
            ipath = (*path, k) if isinstance(data, list) else path
            if not isinstance(item, dict):
                self.problem(
                    ipath, "'notify' must be a table { template = \"...\", to = [...] }", "value"
                )
                ok = False
                continue
            self.unknown_keys(item, ipath, ("template", "to"), "notify")
            template = item.get("template")
            if not isinstance(template, str) or not template.strip():
                self.problem(ipath, "'notify' needs a template name (template = \"...\")")
                ok = False
                continue
            to = self.addresses(item.get("to", []), (*ipath, "to")) if "to" in item else None
            if "to" in item and to is None:
                ok = False
                continue
            sink.append(act.Notify(rule, template, tuple(to or ())))
        return ok

    # -- rules -------------------------------------------------------------------------------
    def rule(self, data: Any, path: KeyPath) -> tuple[Rule, dict[str, Any]] | None:
        if not isinstance(data, dict):
            self.problem(path, "'rule' must be written as [[rule]] tables")
            return None
        self.unknown_keys(data, path, _RULE_KEYS, "[[rule]]")
        name = data.get("name")
        if name is None:
            self.problem(path, 'rule has no name (name = "...")')
            return None
        if not isinstance(name, str) or not name.strip():
            self.problem((*path, "name"), "'name' must be non-empty text", at="value")
            return None
        meta: dict[str, Any] = {}
        ok = True
        for key, types, what in (
            ("description", (str,), "text"),
            ("enabled", (bool,), "true or false"),
            ("replace", (bool,), "true or false"),
            ("before", (str,), "a rule name"),
        ):
            if key in data:
                ok &= self.want(data[key], (*path, key), types, what)
                meta[key] = data[key]
        when = None
        if "when" in data:
            when = self.condition(data["when"], (*path, "when"))
            ok &= when is not None
        if "then" not in data:
            self.problem(path, f"rule '{name}' has no [rule.then] actions")
            return None
        then = self.then(data["then"], (*path, "then"), name)
        if then is None or not ok:
            return None
        rule = Rule(
            name=name,
            when=when,
            category=then["category"],
            override=then.get("override", False),
            tags=then["tags"],
            actions=tuple(then["actions"]),
            stop=then.get("stop", False),
            description=meta.get("description", ""),
            source=self.source,
            line=self.line_of(path),
            enabled=meta.get("enabled", True),
        )
        return rule, meta


class _Loader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.sources: list[str] = []

    def load(self, text: str, source: str, stack: tuple[str, ...]) -> list[Rule]:
        self.sources.append(source)
        # Windows editors (Notepad) start a UTF-8 file with a byte-order mark, which TOML does
        # not allow; it is invisible, so lines and columns are the same without it.
        text = text.removeprefix("\ufeff")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.problems.append(_syntax_problem(source, text, e))
            return []
        except RecursionError:  # tomllib recurses once per level of [ or {
            self.problems.append(Problem(source, 1, 1, "TOML syntax error: nested too deeply"))
            return []
        pos = scan_positions(text)
        f = _FileLoader(self, source, text, pos)
        f.unknown_keys(data, (), _TOP_KEYS, "the rules file")
        if "description" in data:
            f.want(data["description"], ("description",), (str,), "text")

        rules: list[Rule] = []
        if "include" in data:
            includes = f.str_list(data["include"], ("include",)) or []
            inc_path = ("include",) if isinstance(data["include"], str) else None
            for k, inc in enumerate(includes):
                where = inc_path or ("include", k)
                rules.extend(self.include(f, inc, where, source, stack))

        names_included = {r.name: i for i, r in enumerate(rules)}
        if "disable" in data:
            for k, name in enumerate(f.str_list(data["disable"], ("disable",)) or []):
                where = ("disable",) if isinstance(data["disable"], str) else ("disable", k)
                if name in names_included:
                    rules = [r for r in rules if r.name != name]
                else:
                    f.problem(
                        where,
                        f"cannot disable '{name}': no included rule has that name"
                        f"{_suggest(name, list(names_included))}",
                        at="value",
                    )

        own = data.get("rule", [])
        if not isinstance(own, list):
            f.problem(("rule",), "rules must be written as [[rule]] tables")
            own = []
        seen: dict[str, int] = {}
        for k, rdata in enumerate(own):
            path: KeyPath = ("rule", k)
            rname = rdata.get("name") if isinstance(rdata, dict) else None
            duplicate = isinstance(rname, str) and rname in seen
            if duplicate:
                f.problem(
                    (*path, "name"),
                    f"duplicate rule name '{rname}' (first defined on line {seen[rname]})",
                    at="value",
                )
            elif isinstance(rname, str):
                seen[rname] = f.line_of(path)
            got = f.rule(rdata, path)  # validated even when a duplicate, to report all problems
            if got is None or duplicate:
                continue
            rule, meta = got
            existing = next((i for i, r in enumerate(rules) if r.name == rule.name), None)
            if existing is not None and rule.source == rules[existing].source:
                existing = None
            if meta.get("replace"):
                if existing is None:
                    f.problem(
                        (*path, "replace"),
                        f"'replace = true' but no included rule is named "
                        f"'{rule.name}'{_suggest(rule.name, [r.name for r in rules])}",
                    )
                    continue
                rules[existing] = rule
                continue
            if existing is not None:
                f.problem(
                    (*path, "name"),
                    f"rule '{rule.name}' is already defined in "
                    f"{rules[existing].source} (line {rules[existing].line}); add "
                    "'replace = true' to replace it, or choose another name",
                    at="value",
                )
                continue
            before = meta.get("before")
            if before is not None:
                idx = next((i for i, r in enumerate(rules) if r.name == before), None)
                if idx is None:
                    f.problem(
                        (*path, "before"),
                        f"'before': no earlier rule is named '{before}'"
                        f"{_suggest(before, [r.name for r in rules])}",
                        at="value",
                    )
                    continue
                rules.insert(idx, rule)
            else:
                rules.append(rule)
        return rules

    def include(
        self, f: _FileLoader, inc: str, where: KeyPath, source: str, stack: tuple[str, ...]
    ) -> list[Rule]:
        if inc == DEFAULT_INCLUDE:
            key, text, name = DEFAULT_SOURCE, default_rules_text(), DEFAULT_SOURCE
        else:
            base = Path(source).parent if not source.startswith("<") else Path.cwd()
            target = (base / inc).resolve()
            key, name = str(target), str(base / inc) if not Path(inc).is_absolute() else inc
            if key in stack:
                chain = " -> ".join([*stack[1:], key]) if len(stack) > 1 else key
                f.problem(where, f"include cycle: {chain}", at="value")
                return []
            try:
                text = target.read_text(encoding="utf-8")
            except OSError as e:
                f.problem(where, f"cannot include '{inc}': {e.strerror or e}", at="value")
                return []
        if key in stack:
            f.problem(where, f"include cycle through '{inc}'", at="value")
            return []
        return self.load(text, name, (*stack, key))


def _syntax_problem(source: str, text: str, e: tomllib.TOMLDecodeError) -> Problem:
    msg = str(e)
    m = _SYNTAX_POS.search(msg)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        msg = msg[: m.start()].strip()
    else:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        msg = re.sub(r"\s*\(at end of document\)", "", msg) + " (at end of file)"
    return Problem(source, line, col, f"TOML syntax error: {msg}")


def _tname(v: Any) -> str:
    return {
        str: "text", bool: "true/false", int: "a number", float: "a number",
        list: "a list", dict: "a table",
    }.get(type(v), type(v).__name__)  # fmt: skip


def load_rules(text: str, source: str = "<string>") -> RuleSet:
    """Parse, validate and compile rules; raise :class:`RulesError` listing every problem."""
    loader = _Loader()
    own_key = str(Path(source).resolve()) if not source.startswith("<") else source
    rules = loader.load(text, source, (own_key,))
    if not rules and not loader.problems:
        # Most likely a file caught half-written by an editor, or an upload of nothing: taken
        # as it is, every message would go unclassified and no document would be registered.
        loader.problems.append(Problem(source, 1, 1, "no rules: at least one [[rule]] is needed"))
    if loader.problems:
        raise RulesError(loader.problems)
    return RuleSet(tuple(rules), source=source, text=text, sources=tuple(loader.sources))


def load_rules_file(path: str | Path) -> RuleSet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(
            [Problem(str(p), 1, 1, f"cannot read rules file: {e.strerror or e}")]
        ) from None
    except UnicodeDecodeError as e:
        raise RulesError([Problem(str(p), 1, 1, f"rules file is not UTF-8: {e.reason}")]) from None
    return load_rules(text, str(p))


_DEFAULT: RuleSet | None = None


def default_rules() -> RuleSet:
    """The built-in Directive-15 rule set (mailgw/rules/default.toml), loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_rules(default_rules_text(), DEFAULT_SOURCE)
    return _DEFAULT
