"""A loaded, validated and compiled set of rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mailgw.rules.actions import Action
from mailgw.rules.conditions import Node
from mailgw.rules.index import RuleIndex, build_index


@dataclass(frozen=True)
class Rule:
    name: str
    when: Node | None  # None: the rule always matches
    category: str | None = None
    override: bool = False
    tags: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    stop: bool = False
    description: str = ""
    source: str = "<string>"
    line: int = 0
    enabled: bool = True


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "<string>"
    text: str = ""
    sources: tuple[str, ...] = ()  # every file read (the file itself and its includes)
    _by_name: dict[str, Rule] = field(default_factory=dict, repr=False, compare=False)
    _version: list[str] = field(default_factory=list, repr=False, compare=False)

    _index: list[RuleIndex] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({r.name: r for r in self.rules})
        self._index.append(build_index([r.when for r in self.rules]))
        self._version.append(hashlib.sha256(self.text.encode("utf-8")).hexdigest())

    @property
    def version(self) -> str:
        """sha256 (hex) of the rules file's text."""
        return self._version[0]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    @property
    def index(self) -> RuleIndex:
        return self._index[0]

    def get(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self.rules)
