"""The pure evaluator: rules + message context -> :class:`Decision`.

Rules run in order. A matching rule adds its tags and actions; the first matching rule that
sets a category decides it, unless a later matching rule has ``override = true``; a matching
rule with ``stop = true`` ends evaluation. Every evaluated rule leaves a trace of which of its
conditions held, which did not, and which were not evaluated (short-circuit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailgw.rules import actions as act
from mailgw.rules.conditions import AllOf, AnyAttachment, Node, NotOf
from mailgw.rules.context import MessageContext
from mailgw.rules.fields import EvalState
from mailgw.rules.ruleset import Rule, RuleSet


@dataclass(frozen=True)
class ConditionResult:
    """One leaf condition of a rule: its text and whether it held (None: not evaluated)."""

    condition: str
    held: bool | None
    depth: int = 0  # nesting level, for display


@dataclass(frozen=True)
class RuleTrace:
    rule: str
    matched: bool
    conditions: tuple[ConditionResult, ...]
    source: str = ""
    line: int = 0
    effect: str = ""  # what the rule did: "category=report (decided)", "tags=...", ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "matched": self.matched,
            "source": self.source,
            "line": self.line,
            "effect": self.effect,
            "conditions": [
                {"condition": c.condition, "held": c.held, "depth": c.depth}
                for c in self.conditions
            ],
        }


def _walk(node: Node, results: dict[int, bool], depth: int, out: list[ConditionResult]) -> None:
    if isinstance(node, AnyAttachment):
        out.append(ConditionResult(node.describe(), results.get(id(node)), depth))
    elif isinstance(node, AllOf):  # also AnyOf
        out.append(ConditionResult(node.describe() + ":", None, depth))
        for c in node.children:
            _walk(c, results, depth + 1, out)
    elif isinstance(node, NotOf):
        out.append(ConditionResult("not:", None, depth))
        _walk(node.child, results, depth + 1, out)
    else:
        out.append(ConditionResult(node.describe(), results.get(id(node)), depth))


class Decision:
    """What the rules decided for one message."""

    def __init__(
        self,
        category: str,
        category_rule: str | None,
        tags: list[str],
        actions: list[act.Action],
        matched: list[str],
        raw_trace: list[tuple[Rule, bool, list[tuple[Node, bool]], str]] | None,
        stopped_by: str | None,
        rules_version: str,
        replay: Callable[[], list[tuple[Rule, bool, list[tuple[Node, bool]], str]]] | None = None,
    ) -> None:
        self.category = category
        self.category_rule = category_rule  # the rule that decided the category (None: default)
        self.tags = tags
        self.actions = actions
        self.matched_rules = matched
        self.stopped_by = stopped_by
        self.rules_version = rules_version
        self._raw_trace = raw_trace
        self._replay = replay
        self._trace: list[RuleTrace] | None = None

    # -- convenience views of the actions -----------------------------------------------------
    def _of(self, cls: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, cls)]

    @property
    def hold(self) -> act.Hold | None:
        """The first hold action, if any (the pipeline keeps the message, not relayed)."""
        held = self._of(act.Hold)
        return held[0] if held else None

    @property
    def bounce(self) -> act.Bounce | None:
        """The first bounce action, if any (takes precedence over hold)."""
        b = self._of(act.Bounce)
        return b[0] if b else None

    @property
    def registers(self) -> list[str]:
        """Registers to enter the documents in, without duplicates, in rule order."""
        return list(dict.fromkeys(a.register for a in self._of(act.Register)))

    @property
    def notifications(self) -> list[act.Notify]:
        return self._of(act.Notify)

    @property
    def extra_recipients(self) -> list[str]:
        return list(dict.fromkeys(r for a in self._of(act.AddRecipients) for r in a.recipients))

    @property
    def headers(self) -> list[act.SetHeader | act.AddHeader]:
        return [a for a in self.actions if isinstance(a, act.SetHeader | act.AddHeader)]

    # -- trace ----------------------------------------------------------------------------------
    @property
    def trace(self) -> list[RuleTrace]:
        """Per evaluated rule (in order): matched or not, and each condition's result."""
        if self._trace is None:
            if self._raw_trace is None:
                self._raw_trace = self._replay() if self._replay is not None else []
            out = []
            for rule, matched, leaves, effect in self._raw_trace:
                results = {id(node): r for node, r in leaves}
                conds: list[ConditionResult] = []
                if rule.when is not None:
                    _walk(rule.when, results, 0, conds)
                out.append(
                    RuleTrace(rule.name, matched, tuple(conds), rule.source, rule.line, effect)
                )
            self._trace = out
        return self._trace

    def to_dict(self, trace: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "category": self.category,
            "category_rule": self.category_rule,
            "tags": list(self.tags),
            "actions": [a.to_dict() for a in self.actions],
            "matched_rules": list(self.matched_rules),
            "stopped_by": self.stopped_by,
            "rules_version": self.rules_version,
        }
        for a in d["actions"]:
            for k, v in a.items():
                if isinstance(v, tuple):
                    a[k] = list(v)
        if trace:
            d["trace"] = [t.to_dict() for t in self.trace]
        return d

    def explain(self, all_rules: bool = True) -> str:
        """Human-readable account: the outcome, then each rule with its conditions
        (✓ held, ✗ did not hold, · not evaluated). ``all_rules=False`` shows matched rules only."""
        by = f" (rule {self.category_rule})" if self.category_rule else " (no rule set a category)"
        lines = [f"category: {self.category}{by}"]
        lines.append("tags: " + (", ".join(self.tags) if self.tags else "-"))
        lines.append("actions: " + ("; ".join(a.describe() for a in self.actions) or "-"))
        lines.append("matched rules: " + (", ".join(self.matched_rules) or "-"))
        if self.stopped_by:
            lines.append(f"stopped by rule: {self.stopped_by}")
        lines.append("")
        for t in self.trace:
            if not all_rules and not t.matched:
                continue
            mark = "MATCHED" if t.matched else "no match"
            loc = f"  [{t.source}:{t.line}]" if t.line else ""
            lines.append(f"rule {t.rule}: {mark}{loc}")
            if not t.conditions:
                lines.append("    (no conditions: always matches)")
            for c in t.conditions:
                sym = {True: "✓", False: "✗", None: "·"}[c.held]
                if c.condition.endswith(":") and c.held is None:
                    sym = " "
                lines.append("    " + "  " * c.depth + f"{sym} {c.condition}")
            if t.matched and t.effect:
                lines.append(f"    => {t.effect}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"Decision(category={self.category!r}, tags={self.tags!r}, "
            f"matched_rules={self.matched_rules!r})"
        )


_Raw = list[tuple[Rule, bool, list[tuple[Node, bool]], str]]


def _run(
    rules: RuleSet,
    ctx: MessageContext,
    order: list[int] | None,
    raw: _Raw | None,
    st: EvalState | None = None,
) -> tuple[str | None, str | None, list[str], list[act.Action], list[str], str | None]:
    """Evaluate the rules at ``order`` (all when None); with ``raw``, record a full trace."""
    if st is None:
        st = EvalState(ctx, rules.index.filters)
    category: str | None = None
    category_rule: str | None = None
    actions: list[act.Action] = []
    matched: list[str] = []
    stopped_by = None
    all_rules = rules.rules
    for i in order if order is not None else range(len(all_rules)):
        rule = all_rules[i]
        if not rule.enabled:
            continue
        leaves: list[tuple[Node, bool]] | None = [] if raw is not None else None
        if rule.when is not None and not rule.when.ev(st, leaves):
            if raw is not None:
                raw.append((rule, False, leaves or [], ""))
            continue
        matched.append(rule.name)
        effect: list[str] = []
        if rule.category is not None:
            if category is None or rule.override:
                verb = "override" if category is not None else "decided"
                category, category_rule = rule.category, rule.name
                st.category = category
                effect.append(f"category={rule.category} ({verb})")
            else:
                effect.append(f"category={rule.category} (ignored: already {category})")
        for tag in rule.tags:
            if tag not in st.tags:
                st.tags.append(tag)
        if rule.tags:
            effect.append("tags=" + ",".join(rule.tags))
        if rule.actions:
            actions.extend(rule.actions)
            effect.extend(a.describe() for a in rule.actions)
        if rule.stop:
            effect.append("stop")
        if raw is not None:
            raw.append((rule, True, leaves or [], "; ".join(effect)))
        if rule.stop:
            stopped_by = rule.name
            break
    return category, category_rule, list(st.tags), actions, matched, stopped_by


def evaluate(rules: RuleSet, ctx: MessageContext) -> Decision:
    """Evaluate ``rules`` against one message. Pure: no I/O, no side effects on ``ctx``.

    Rules that cannot match (none of the text patterns they require occurs in the message)
    are skipped; the per-rule trace is computed on demand (``Decision.trace``) by evaluating
    every rule again with tracing, which gives the same decision.
    """
    st = EvalState(ctx, rules.index.filters)
    index = rules.index
    order = None
    if index.atom_rules:
        order = index.candidates({key: st.hits(key) for key in index.filters})
    category, category_rule, tags, actions, matched, stopped_by = _run(rules, ctx, order, None, st)
    return Decision(
        category=category or "other",
        category_rule=category_rule,
        tags=tags,
        actions=actions,
        matched=matched,
        raw_trace=None,
        stopped_by=stopped_by,
        rules_version=rules.version,
        replay=lambda: _replay(rules, ctx, st),
    )


def _replay(rules: RuleSet, ctx: MessageContext, done: EvalState) -> _Raw:
    """Evaluate every rule again with tracing, reusing the field values (folded texts) and
    pattern hits already computed; the decision so far (category, tags) starts afresh."""
    st = EvalState(ctx, rules.index.filters)
    st.cache.update(done.cache)
    st.hit_cache.update(done.hit_cache)
    raw: _Raw = []
    _run(rules, ctx, None, raw, st)
    return raw
