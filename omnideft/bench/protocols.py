"""The protocol registry: `omnideft bench NAME` asks here. Adding a protocol = its file + one line."""

from __future__ import annotations

from omnideft.bench.protocol import Protocol
from omnideft.bench.retention import RetentionProtocol
from omnideft.bench.subject import SubjectProtocol
from omnideft.bench.visualcloze import VisualClozeProtocol
from omnideft.errors import UserError

PROTOCOLS: dict[str, type[Protocol]] = {p.name: p for p in (
    VisualClozeProtocol,
    SubjectProtocol,
    RetentionProtocol,
)}


def protocol_class(name: str) -> type[Protocol]:
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
