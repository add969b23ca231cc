"""RulesManager: reload keeps the last good rules, on_loaded for each new version, watching."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from mailgw.rules.loader import default_rules
from mailgw.rules.manager import RulesManager

GOOD = '[[rule]]\nname = "a"\nwhen = { field = "subject", contains = "x" }\nthen.tags = ["a"]\n'
GOOD2 = '[[rule]]\nname = "b"\nthen.category = "report"\n'
BAD = '[[rule]]\nname = "c"\nthen.category = "nope"\n'


def test_no_path_means_default_rules() -> None:
    seen: list[tuple[str, str, str]] = []
    m = RulesManager(None, lambda *a: seen.append(a))
    assert m.active.names == default_rules().names
    assert m.version == hashlib.sha256(default_rules().text.encode()).hexdigest()
    assert len(seen) == 1 and seen[0][1] == m.version


def test_reload_keeps_last_good_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD, encoding="utf-8")
    seen: list[tuple[str, str, str]] = []
    m = RulesManager(path, lambda text, sha, src: seen.append((text, sha, src)))
    assert m.active.names == ["a"]
    assert seen == [(GOOD, hashlib.sha256(GOOD.encode()).hexdigest(), str(path))]

    path.write_text(BAD, encoding="utf-8")
    problems = m.reload()
    assert problems and problems[0].line == 3 and "unknown category" in problems[0].message
    assert m.active.names == ["a"]  # last good rules stay
    assert m.problems == problems
    assert len(seen) == 1

    assert m.reload() == problems  # still bad: same answer, nothing activated
    path.write_text(GOOD2, encoding="utf-8")
    assert m.reload() == []
    assert m.active.names == ["b"] and m.problems == []
    assert [s[0] for s in seen] == [GOOD, GOOD2]
    assert m.reload() == [] and len(seen) == 2  # unchanged text: not reported again


def test_a_file_emptied_while_saved_keeps_the_rules(tmp_path: Path) -> None:
    """An editor truncates the file, then writes it: a reload in between must not switch every
    message to no rules (no category, nothing registered)."""
    path = tmp_path / "rules.toml"
    path.write_text(GOOD, encoding="utf-8")
    m = RulesManager(path)
    path.write_text("", encoding="utf-8")
    problems = m.reload()
    assert problems and "no rules" in problems[0].message
    assert m.active.names == ["a"]


def test_bad_file_at_start_falls_back_to_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(BAD, encoding="utf-8")
    m = RulesManager(path)
    assert m.problems and m.active.names == default_rules().names
    missing = RulesManager(tmp_path / "missing.toml")
    assert "cannot read" in missing.problems[0].message


async def test_watch_polls_and_request_reload(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD, encoding="utf-8")
    seen: list[str] = []
    m = RulesManager(path, lambda text, sha, src: seen.append(text))
    task = asyncio.create_task(m.watch(interval=0.05))
    try:
        path.write_text(GOOD2 + "\n# changed\n", encoding="utf-8")
        for _ in range(100):
            if m.active.names == ["b"]:
                break
            await asyncio.sleep(0.02)
        assert m.active.names == ["b"]

        path.write_text(BAD, encoding="utf-8")
        for _ in range(100):
            if m.problems:
                break
            await asyncio.sleep(0.02)
        assert m.problems and m.active.names == ["b"]

        # a SIGHUP handler calls request_reload(): it reloads at once even if mtime looks equal
        path.write_text(GOOD, encoding="utf-8")
        m.request_reload()
        for _ in range(100):
            if m.active.names == ["a"]:
                break
            await asyncio.sleep(0.01)
        assert m.active.names == ["a"]
        assert seen[-1] == GOOD
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
