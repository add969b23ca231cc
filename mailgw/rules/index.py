"""Pre-filtering so that 1,000 rules cost about as much as a handful.

Every ``contains`` / ``matches`` leaf on a message field is added to one re2 ``Filter``
(FilteredRE2) per (field, folded) pair. Per evaluation each field is scanned once: the filter
matches the literal atoms of all patterns together and runs only the regexes whose atoms are
present, returning exactly the patterns that match. Leaves then just look up their pattern's
index.

A rule whose condition *requires* one of a set of such patterns (a ``contains`` leaf under
``all``, every branch of an ``any`` ...) cannot match when none of them matched, so it is not
even visited. Rules with no such requirement (only ``not``, numbers, ``exists`` …) are always
visited. Skipping never changes a decision: a skipped rule could not have matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re2

from mailgw.rules.conditions import (
    AllOf,
    AnyAttachment,
    AnyOf,
    Leaf,
    Node,
    NotOf,
    _fold_pattern,
    glob_to_regex,
)
from mailgw.rules.fields import TEXT, FieldSpec, norm

FilterKey = tuple[str, bool]
Atom = tuple[FilterKey, int]


@dataclass
class RuleIndex:
    filters: dict[FilterKey, tuple[FieldSpec, Any]] = field(default_factory=dict)
    requirements: list[frozenset[Atom] | None] = field(default_factory=list)
    atom_rules: dict[Atom, list[int]] = field(default_factory=dict)
    unfiltered: list[int] = field(default_factory=list)

    def candidates(self, hits: dict[FilterKey, frozenset[int]]) -> list[int]:
        """Indices of the rules that may match, in order."""
        cand = set(self.unfiltered)
        atom_rules = self.atom_rules
        for key, matched in hits.items():
            for i in matched:
                cand.update(atom_rules.get((key, i), ()))
        return sorted(cand)


def _options(case_sensitive: bool) -> Any:
    o = re2.Options()
    o.log_errors = False
    o.case_sensitive = case_sensitive
    o.max_mem = 64 << 20
    return o


def _patterns(leaf: Leaf) -> tuple[str, bool] | None:
    """One pattern equivalent to the leaf (any of its values), and whether case matters."""
    values = leaf.value if isinstance(leaf.value, list) else [leaf.value]
    if leaf.op == "contains":
        needles = [norm(v) for v in values] if leaf.fold else values
        return "|".join(re2.escape(n) for n in needles), True
    if leaf.op in ("equals", "in", "starts_with", "ends_with"):
        needles = [norm(v) for v in values] if leaf.fold else values
        alt = "(?:" + "|".join(re2.escape(n) for n in needles) + ")"
        head = "\\A" if leaf.op != "ends_with" else ""
        tail = "\\z" if leaf.op != "starts_with" else ""
        return head + alt + tail, True
    if leaf.op == "glob":
        srcs = [glob_to_regex(norm(v) if leaf.fold else v) for v in values]
        return "\\A(?:" + "|".join(srcs) + ")\\z", True
    if leaf.op == "matches":
        srcs = [_fold_pattern(v) if leaf.fold else v for v in values]
        return (srcs[0] if len(srcs) == 1 else "|".join(f"(?:{s})" for s in srcs)), not leaf.fold
    return None


def build_index(whens: list[Node | None]) -> RuleIndex:
    idx = RuleIndex()
    builders: dict[FilterKey, tuple[FieldSpec, Any]] = {}

    def add(leaf: Leaf) -> Atom | None:
        if leaf.spec.dynamic or leaf.spec.attachment or leaf.spec.kind != TEXT:
            return None
        pat = _patterns(leaf)
        if pat is None:
            return None
        key = (leaf.spec.name, leaf.fold)
        if key not in builders:
            builders[key] = (leaf.spec, re2.Filter())
        try:
            n = builders[key][1].Add(pat[0], _options(pat[1]))
        except re2.error:
            return None
        atom = (key, n)
        leaf.atom = atom
        return atom

    def req(node: Node) -> frozenset[Atom] | None:
        if isinstance(node, Leaf):
            atom = add(node)
            return frozenset([atom]) if atom is not None else None
        if isinstance(node, NotOf):
            _register(node.child)
            return None
        if isinstance(node, AnyAttachment):
            return None
        if isinstance(node, AnyOf):
            reqs = [req(c) for c in node.children]
            if any(r is None for r in reqs):
                return None
            return frozenset().union(*[r for r in reqs if r is not None])
        if isinstance(node, AllOf):
            reqs = [r for r in (req(c) for c in node.children) if r is not None]
            return min(reqs, key=len) if reqs else None
        return None

    def _register(node: Node) -> None:
        req(node)  # leaves below a `not` still use the filter for their own result

    for i, when in enumerate(whens):
        r = req(when) if when is not None else None
        idx.requirements.append(r)
        if r is None:
            idx.unfiltered.append(i)
        else:
            for atom in r:
                idx.atom_rules.setdefault(atom, []).append(i)
    for key, (spec, flt) in builders.items():
        flt.Compile()
        idx.filters[key] = (spec, flt)
    return idx
