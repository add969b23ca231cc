"""Holds the active rule set, reloads it when the file changes or on request (SIGHUP).

A file with errors never replaces the active rules: the last good rules stay in force and the
problems are returned (and kept in ``problems``) so the gateway can log them. Every newly
activated version is reported to ``on_loaded(text, sha256, source)`` so it can be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from mailgw.rules.loader import DEFAULT_SOURCE, default_rules, load_rules
from mailgw.rules.problems import Problem, RulesError
from mailgw.rules.ruleset import RuleSet

log = logging.getLogger(__name__)

OnLoaded = Callable[[str, str, str], None]
_Stamp = tuple[tuple[str, int, int], ...]


class RulesManager:
    """The gateway's current rules.

    ``path`` None means the built-in default rules. When the file at ``path`` cannot be loaded
    at construction, the default rules are active and ``problems`` says why (the caller decides
    whether to refuse to start).
    """

    def __init__(self, path: Path | None, on_loaded: OnLoaded | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.on_loaded = on_loaded
        self.problems: list[Problem] = []
        self._active: RuleSet | None = None
        self._stamp: _Stamp = ()
        self._requested = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._text_rules: RuleSet | None = None  # set by activate_text (no rules file)
        self.reload()
        if self._active is None:
            self._activate(default_rules())

    # -- state ------------------------------------------------------------------------------
    @property
    def active(self) -> RuleSet:
        assert self._active is not None
        return self._active

    @property
    def version(self) -> str:
        """sha256 of the active rules' text."""
        return self.active.version

    @property
    def source(self) -> str:
        return self.active.source

    # -- loading ----------------------------------------------------------------------------
    def _candidate(self) -> tuple[RuleSet | None, list[Problem], _Stamp]:
        """Read and compile the rules file (no state change; safe to run in a thread)."""
        if self.path is None:
            return self._text_rules or default_rules(), [], ()
        stamp_before = self._file_stamp([str(self.path)])
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8"
            return None, [Problem(str(self.path), 1, 1, f"cannot read rules: {reason or e}")], ()
        try:
            rules = load_rules(text, str(self.path))
        except RulesError as e:
            return None, e.problems, stamp_before
        files = [s for s in rules.sources if not s.startswith("<")]
        return rules, [], self._file_stamp(files)

    def _apply(
        self, rules: RuleSet | None, problems: list[Problem], stamp: _Stamp
    ) -> list[Problem]:
        if stamp:
            self._stamp = stamp  # a bad file is not retried until it changes again
        self.problems = list(problems)
        if rules is None:
            for p in problems:
                log.error("rules not reloaded, keeping version %s: %s", self._short(), p)
            return self.problems
        if self._active is None or rules.version != self._active.version:
            self._activate(rules)
        return []

    def _activate(self, rules: RuleSet) -> None:
        self._active = rules
        log.info("rules %s active (%d rules from %s)", self._short(), len(rules), rules.source)
        if self.on_loaded is not None:
            self.on_loaded(rules.text, rules.version, rules.source or DEFAULT_SOURCE)

    def _short(self) -> str:
        return self._active.version[:12] if self._active else "none"

    def activate_text(self, text: str, source: str = "api") -> RuleSet:
        """Validate ``text`` and make it the active rules, for a manager without a rules file
        (the gateway on its default rules, rules sent through the API). Raises RulesError, and
        then the active rules stay; a later reload keeps these rules instead of the defaults."""
        if self.path is not None:
            raise ValueError(f"the rules come from {self.path}: write the file instead")
        rules = load_rules(text, source)
        self._text_rules = rules
        self._apply(rules, [], ())
        return rules

    def reload(self) -> list[Problem]:
        """Load the rules file now. Returns its problems ([] when the new rules are active);
        on problems the previous rules stay active."""
        return self._apply(*self._candidate())

    # -- change detection -------------------------------------------------------------------
    @staticmethod
    def _file_stamp(files: list[str]) -> _Stamp:
        out = []
        for f in files:
            try:
                st = os.stat(f)
                out.append((f, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((f, -1, -1))
        return tuple(out)

    def changed(self) -> bool:
        """Has the rules file (or a file it includes) changed since it was last read?"""
        if self.path is None:
            return False
        files = [f for f, _, _ in self._stamp] or [str(self.path)]
        return self._file_stamp(files) != self._stamp

    def request_reload(self) -> None:
        """Ask the watcher to reload at once (safe to call from a signal handler or thread)."""
        self._requested = True
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def watch(self, interval: float = 2.0) -> None:
        """Poll for changes every ``interval`` seconds (and reload at once on request) until
        cancelled. Reading, compiling and ``on_loaded`` (a database write in the gateway) run in
        a worker thread, off the event loop."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if self._requested:
            self._event.set()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), timeout=interval)
                self._event.clear()
                requested, self._requested = self._requested, False
                if requested or self.changed():
                    await asyncio.to_thread(lambda: self._apply(*self._candidate()))
        finally:
            self._event = None
            self._loop = None
