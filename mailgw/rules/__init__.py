"""The rules engine: TOML rules (data, not code) -> a pure, explainable decision per message.

from mailgw.rules import load_rules, default_rules, evaluate, MessageContext
decision = evaluate(default_rules(), MessageContext(parsed, mail_from=..., rcpt_to=[...]))
"""

from mailgw.rules.context import MessageContext
from mailgw.rules.evaluate import Decision, evaluate
from mailgw.rules.loader import default_rules, load_rules, load_rules_file
from mailgw.rules.problems import Problem, RulesError
from mailgw.rules.ruleset import Rule, RuleSet

__all__ = [
    "Decision",
    "MessageContext",
    "Problem",
    "Rule",
    "RuleSet",
    "RulesError",
    "default_rules",
    "evaluate",
    "load_rules",
    "load_rules_file",
]
