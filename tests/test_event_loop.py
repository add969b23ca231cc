"""[runtime] event_loop: which event loop the gateway's processes run on."""

from __future__ import annotations

import asyncio

import pytest

from mailgw.aio import loop_factory, loop_name, run
from mailgw.config import ConfigError, parse_config


async def current_loop_name() -> str:
    return loop_name(asyncio.get_running_loop())


@pytest.mark.parametrize(
    ("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_run_uses_the_configured_loop(choice: str, expected: str) -> None:
    assert run(current_loop_name(), choice) == expected


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        loop_factory("uvloop")


def test_config_key_is_checked() -> None:
    assert parse_config('[runtime]\nevent_loop = "asyncio"\n').runtime.event_loop == "asyncio"
    assert parse_config("").runtime.event_loop == "auto"
    with pytest.raises(ConfigError, match=r"runtime\.event_loop"):
        parse_config('[runtime]\nevent_loop = "trio"\n')
