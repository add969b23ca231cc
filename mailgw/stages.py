"""The pipeline's stage list, built the same way in the gateway and in a pipeline process."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from mailgw.config import Config
from mailgw.decide import ActiveRules, rules_stage
from mailgw.keys import Keyring
from mailgw.notify.outgoing import Outgoing, templates_for
from mailgw.notify.stage import notify_stage
from mailgw.pipeline import Stage, parse_stage, trace_stage
from mailgw.registry.blobs import FileBlobStore
from mailgw.registry.stage import register_stage
from mailgw.search.stage import index_stage
from mailgw.signing import signature_stage
from mailgw.smtp.policy import Networks


def build_stages(
    config: Config, sessions: sessionmaker[Session], rules: ActiveRules
) -> list[Stage]:
    """parse ▶ verify signatures ▶ rules ▶ register documents ▶ index for search ▶ notify
    ▶ trace."""
    trusted = Networks(config.smtp.trusted_networks)
    notifying = notify_stage(templates_for(config), Outgoing.from_config(config))
    store = FileBlobStore.in_data_dir(config.storage.data_dir)
    keyring = Keyring.for_data_dir(config.storage.data_dir)
    return [
        parse_stage,
        signature_stage(keyring),
        rules_stage(rules, trusted),
        register_stage(sessions, store, config.registry),
        index_stage(sessions),
        notifying,
        trace_stage,
    ]
