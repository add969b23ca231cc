"""What the rules engine knows about one message: the parsed message plus its envelope and client.

The pipeline builds a :class:`MessageContext` for every message and hands it to
:func:`mailgw.rules.evaluate.evaluate`. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailgw.mime.model import ParsedMessage

# Keys of ``MessageContext.signature`` (filled by the signature-verification stage; all optional):
#   valid        bool  the signature verified cryptographically
#   fingerprint  str   fingerprint of the signing key (upper-case hex, no spaces)
#   uid          str   user id of the signing key, e.g. "Văn thư Sở TTTT <vanthu@stttt.gov.vn>"
#   trust        str   trust level of the key: "ultimate", "full", "marginal", "never", "unknown"
#   reason       str   why verification failed or a note ("no public key", "bad signature", ...)
# ``signature`` is None when the message carries no signature at all.
SIGNATURE_KEYS = ("valid", "fingerprint", "uid", "trust", "reason")


@dataclass
class MessageContext:
    """One message as the rules see it.

    parsed       the parsed message (``mailgw.mime.parse.parse_message``)
    mail_from    SMTP envelope sender (MAIL FROM), "" for the null sender
    rcpt_to      SMTP envelope recipients (RCPT TO)
    client_addr  IP address of the SMTP client (or None for IMAP intake / local files)
    auth_user    the SMTP AUTH user name, None when not authenticated
    listener     which intake received it: "relay", "submission", "imap", ... (None if unknown)
    trusted      the client is on a trusted network or authenticated (decided by the SMTP policy)
    signature    signature facts (see ``SIGNATURE_KEYS``) or None when the message is unsigned
    """

    parsed: ParsedMessage
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    client_addr: str | None = None
    auth_user: str | None = None
    listener: str | None = None
    trusted: bool = False
    signature: dict[str, Any] | None = None
