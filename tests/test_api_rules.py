"""Rules over the API: read, replace (file and no-file gateways), try a message; and
RulesManager.activate_text."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from mailgw.config import Config
from mailgw.db.models import RuleVersion
from mailgw.rules.manager import RulesManager
from mailgw.rules.problems import RulesError
from tests.test_api_archive import api, bearer, deliver, message, rules_file, token

REPORT = '[[rule]]\nname = "all"\nthen = { register = "default", category = "report" }\n'
DIRECTIVE = '[[rule]]\nname = "chi-thi"\nthen = { category = "announcement", tags = ["api"] }\n'
BAD = '[[rule]]\nname = "x"\n\nthen.category = "nope"\n'


def versions(gw) -> list[RuleVersion]:
    with gw.sessions() as session:
        return list(session.scalars(select(RuleVersion).order_by(RuleVersion.id)))


async def test_put_rules_on_a_file_gateway(config: Config, tmp_path: Path, make_gateway) -> None:
    path = rules_file(config, tmp_path, REPORT)
    gw = await make_gateway(config)
    admin = bearer(token(gw, "admin"))
    async with api(gw) as client:
        before = (await client.get("/rules", headers=admin)).json()
        assert before["source"] == str(path) and before["file"] == str(path)
        assert before["rules"] == ["all"] and before["text"] == REPORT

        bad = await client.put("/rules", headers=admin, content=BAD.encode())
        assert bad.status_code == 400
        detail = bad.json()["detail"]
        assert detail["active_version"] == before["version"]
        problem = detail["problems"][0]
        assert (problem["line"], problem["col"]) == (4, 17) or problem["line"] == 4
        assert "category" in problem["message"]
        assert path.read_text(encoding="utf-8") == REPORT  # the file was not touched
        assert (await client.get("/rules", headers=admin)).json()["version"] == before["version"]

        syntax = await client.put("/rules", headers=admin, content=b"[[rule]\nname=1\n")
        assert syntax.status_code == 400 and syntax.json()["detail"]["problems"][0]["line"] == 1
        not_utf8 = await client.put("/rules", headers=admin, content=b"\xff\xfe")
        assert not_utf8.status_code == 400
        deep = await client.put("/rules", headers=admin, content=b"a = " + b"[" * 5000)
        assert deep.status_code == 400, deep.text  # tomllib's RecursionError: not a 500
        assert "nested too deeply" in deep.json()["detail"]["problems"][0]["message"]
        for nothing in (b"", b"# only a comment\n"):  # curl -T of a file that is not there
            empty = await client.put("/rules", headers=admin, content=nothing)
            assert empty.status_code == 400, empty.text
            assert "no rules" in empty.json()["detail"]["problems"][0]["message"]
        assert path.read_text(encoding="utf-8") == REPORT

        good = await client.put(
            "/rules", headers={**admin, "Content-Type": "application/toml"}, content=DIRECTIVE
        )
        assert good.status_code == 200, good.text
        after = good.json()
        assert after["rules"] == ["chi-thi"] and after["version"] != before["version"]
        assert path.read_text(encoding="utf-8") == DIRECTIVE  # file and database agree
        assert not list(tmp_path.glob(".rules.toml.*"))  # no temporary file left
        listed = (await client.get("/rules/versions", headers=admin)).json()
        assert listed["total"] == 2
        assert [v["active"] for v in listed["versions"]] == [True, False]
        assert listed["versions"][0]["sha256"] == after["version"]
        one = await client.get(f"/rules/versions/{listed['versions'][0]['id']}", headers=admin)
        assert one.json()["text"] == DIRECTIVE
        assert (await client.get("/rules/versions/999999", headers=admin)).status_code == 404
    row = await deliver(gw, message(20))
    assert row.category == "announcement" and row.rules_version == after["version"]
    assert gw.rules.version == after["version"]
    actions = [(r.action, r.status) for r in _audit(gw)]
    assert actions == [("rules.update", 400)] * 6 + [("rules.update", 200)]


def _audit(gw):
    from tests.test_api_archive import audit_rows

    return audit_rows(gw)


async def test_put_rules_without_a_file_is_kept_across_restarts(
    config: Config, make_gateway
) -> None:
    gw = await make_gateway(config)
    admin = bearer(token(gw, "admin"))
    async with api(gw) as client:
        default = (await client.get("/rules", headers=admin)).json()
        assert default["file"] is None and default["source"] == "<default rules>"
        bad = await client.put("/rules", headers=admin, content=BAD.encode())
        assert bad.status_code == 400 and bad.json()["detail"]["problems"][0]["line"] == 4
        assert gw.rules.version == default["version"]
        good = await client.put("/rules", headers=admin, content=DIRECTIVE.encode())
        assert good.status_code == 200 and good.json()["source"] == "api"
    active = [v for v in versions(gw) if v.active]
    assert [(v.source, v.text) for v in active] == [("api", DIRECTIVE)]
    assert gw.rules.reload() == [] and gw.rules.source == "api"  # SIGHUP keeps them
    row = await deliver(gw, message(21))
    assert row.category == "announcement"
    await gw.shutdown()

    again = await make_gateway(config)  # same database: the API's rules come back
    assert again.rules.source == "api" and again.rules.active.names == ["chi-thi"]
    assert [(v.source, v.active) for v in versions(again) if v.active] == [("api", True)]


async def test_rules_test_explains_an_uploaded_message(config: Config, make_gateway) -> None:
    gw = await make_gateway(config)
    admin = bearer(token(gw, "admin"))
    data = message(30)
    async with api(gw) as client:
        raw = await client.post(
            "/rules/test", headers={**admin, "Content-Type": "message/rfc822"}, content=data
        )
        form = await client.post(
            "/rules/test", headers=admin, files={"file": ("m.eml", data, "message/rfc822")}
        )
        empty = await client.post("/rules/test", headers=admin, content=b"")
        no_file = await client.post("/rules/test", headers=admin, files={"other": ("a", b"x")})
    assert raw.status_code == 200 and form.status_code == 200
    assert raw.json() == form.json()
    body = raw.json()
    assert body["rules_version"] == gw.rules.version
    assert body["facts"]["subject"] == "Công văn số 30/UBND-VP"
    assert body["facts"]["attachments"] == 1
    assert body["category"] == body["decision"]["category"]
    assert body["explanation"].startswith(f"category: {body['category']}")
    assert "trace" in body["decision"] and body["decision"]["trace"]
    assert empty.status_code == 400 and no_file.status_code == 400


def test_activate_text_without_a_file(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []
    manager = RulesManager(None, lambda *a: seen.append(a))
    rules = manager.activate_text(DIRECTIVE)
    assert manager.active is rules and manager.source == "api" and manager.problems == []
    assert seen[-1] == (DIRECTIVE, rules.version, "api")
    with pytest.raises(RulesError) as bad:
        manager.activate_text(BAD)
    assert bad.value.problems[0].line == 4 and manager.active is rules
    assert manager.reload() == [] and manager.active is rules  # not back to the defaults
    manager.activate_text(DIRECTIVE)
    assert len(seen) == 2  # the same text again is not a new version

    path = tmp_path / "rules.toml"
    path.write_text(REPORT, encoding="utf-8")
    with pytest.raises(ValueError):
        RulesManager(path).activate_text(DIRECTIVE)


async def test_a_rollback_lists_the_old_text_as_the_latest_version(
    config: Config, make_gateway
) -> None:
    """Going back to an earlier text activates its stored version again: the history lists
    versions in the order they were in force, and the first load keeps its date."""
    gw = await make_gateway(config)
    admin = bearer(token(gw, "admin"))
    async with api(gw) as client:
        for text in (REPORT, DIRECTIVE, REPORT):
            assert (await client.put("/rules", headers=admin, content=text)).status_code == 200
        page = (await client.get("/rules/versions", headers=admin)).json()
        rules = (await client.get("/rules", headers=admin)).json()
    texts = {v.sha256: v.text for v in versions(gw)}
    order = [texts[v["sha256"]] for v in page["versions"]]
    assert order[:2] == [REPORT, DIRECTIVE] and page["versions"][0]["active"]
    assert len(order) == 3  # the default rules, REPORT and DIRECTIVE: one row per text
    report = page["versions"][0]
    assert report["activated_at"] > report["loaded_at"]
    assert report["activated_at"] > page["versions"][1]["activated_at"]
    assert rules["activated_at"] == report["activated_at"]
    assert rules["loaded_at"] == report["loaded_at"]
