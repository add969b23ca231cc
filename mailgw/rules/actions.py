"""Typed actions a rule can take (besides setting the category and adding tags).

Each action records the rule that asked for it. The pipeline acts on them:
``SetHeader``/``AddHeader`` on the relayed copy's prepended headers, ``Register`` into the named
register, ``Notify`` through the notification templates, ``AddRecipients`` to the relay envelope,
``Hold`` (keep in quarantine for a person to release) and ``Bounce`` (reject / DSN to the sender).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Action:
    rule: str

    @property
    def kind(self) -> str:
        return _KINDS[type(self)]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.kind, **asdict(self)}

    def describe(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "rule"}
        return self.kind + " " + ", ".join(f"{k}={v!r}" for k, v in fields.items())


@dataclass(frozen=True)
class SetHeader(Action):
    """Replace (or add) a header on the relayed message."""

    name: str
    value: str


@dataclass(frozen=True)
class AddHeader(Action):
    """Add a header on the relayed message (keeping others of that name)."""

    name: str
    value: str


@dataclass(frozen=True)
class Register(Action):
    """Register the message's attachments as official documents in ``register``."""

    register: str


@dataclass(frozen=True)
class Notify(Action):
    """Send a notification rendered from ``template`` to ``recipients``."""

    template: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class AddRecipients(Action):
    """Also relay the message to ``recipients``."""

    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Hold(Action):
    """Do not relay; keep the message for a person to release."""

    reason: str


@dataclass(frozen=True)
class Bounce(Action):
    """Do not relay; return the message to its sender with ``reason``."""

    reason: str


_KINDS: dict[type, str] = {
    SetHeader: "set_header",
    AddHeader: "add_header",
    Register: "register",
    Notify: "notify",
    AddRecipients: "add_recipients",
    Hold: "hold",
    Bounce: "bounce",
}
