"""The pipeline stage that runs the rules and turns the decision into what happens to a message."""

from __future__ import annotations

from typing import Protocol

from mailgw.pipeline import Job, Stage
from mailgw.rules import actions as act
from mailgw.rules.context import MessageContext
from mailgw.rules.evaluate import evaluate
from mailgw.rules.ruleset import RuleSet
from mailgw.smtp.policy import Networks


class ActiveRules(Protocol):
    """Where the rules come from: the gateway's RulesManager, or the database in a
    pipeline process (mailgw/worker.py)."""

    @property
    def active(self) -> RuleSet: ...


def rules_stage(source: ActiveRules, trusted: Networks) -> Stage:
    def run(job: Job) -> None:
        assert job.parsed is not None, "the parse stage runs first"
        rules = source.active  # one consistent version for the whole message
        ctx = MessageContext(
            parsed=job.parsed,
            mail_from=job.mail_from,
            rcpt_to=list(job.rcpt_to),
            client_addr=job.client_addr,
            auth_user=job.auth_user,
            listener=job.listener,
            trusted=bool(job.auth_user) or trusted.contains(job.client_addr),
            signature=job.signature,
        )
        decision = evaluate(rules, ctx)
        job.category = decision.category
        job.tags = list(decision.tags)
        job.rules_version = decision.rules_version
        job.decision = decision.to_dict()
        job.extra_rcpts = list(decision.extra_recipients)
        for header in decision.headers:
            job.headers.append((header.name, header.value))
        if decision.bounce is not None:
            job.bounce_reason = decision.bounce.reason
        elif decision.hold is not None:
            job.hold_reason = f"held by rule {decision.hold.rule}: {decision.hold.reason}"
        job.registers = list(decision.registers)
        job.notifications = [n for n in decision.actions if isinstance(n, act.Notify)]

    return run
