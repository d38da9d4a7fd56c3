"""Camera vectors from the command line: `--camera "f,cx,cy,k,qw,qx,qy,qz,tx,ty,tz"` (11 numbers) or named fields
`--camera "f=0.8,cx=0.5,cy=0.5,qw=1,qx=0,qy=0,qz=0,tx=0,ty=0,tz=2"` (k may be left out: 0)."""

from __future__ import annotations

import math

from omnideft.camera.record import VECTOR_FIELDS, VECTOR_SIZE, canonical_quaternion
from omnideft.errors import UserError

OPTIONAL_FIELDS = {"k": 0.0}


def parse_camera(text: str, flag: str = "--camera") -> list[float]:
    """The model's 11 numbers (docs/camera.md); the quaternion is normalised and made canonical (qw >= 0)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all("=" in p for p in parts):
        values = _named(parts, text, flag)
    elif any("=" in p for p in parts):
        raise UserError(f"{flag} {text!r}: mixes named (name=value) and positional numbers; use one form")
    else:
        if len(parts) != VECTOR_SIZE:
            raise UserError(f"{flag} {text!r} has {len(parts)} numbers; expected {VECTOR_SIZE}: "
                            f"{','.join(VECTOR_FIELDS)}")
        values = [_number(p, name, text, flag) for p, name in zip(parts, VECTOR_FIELDS)]
    q = values[4:8]
    if math.sqrt(sum(x * x for x in q)) < 1e-12:
        raise UserError(f"{flag} {text!r}: the quaternion qw,qx,qy,qz is zero")
    return values[:4] + canonical_quaternion(q) + values[8:]


def _named(parts: list[str], text: str, flag: str) -> list[float]:
    got: dict[str, float] = {}
    for p in parts:
        name, value = (s.strip() for s in p.split("=", 1))
        if name not in VECTOR_FIELDS:
            raise UserError(f"{flag} {text!r}: unknown field {name!r}; fields: {','.join(VECTOR_FIELDS)}")
        if name in got:
            raise UserError(f"{flag} {text!r}: field {name!r} given twice")
        got[name] = _number(value, name, text, flag)
    missing = [n for n in VECTOR_FIELDS if n not in got and n not in OPTIONAL_FIELDS]
    if missing:
        raise UserError(f"{flag} {text!r}: missing field(s) {','.join(missing)}")
    return [got.get(n, OPTIONAL_FIELDS.get(n, 0.0)) for n in VECTOR_FIELDS]


def _number(value: str, name: str, text: str, flag: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise UserError(f"{flag} {text!r}: {name}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise UserError(f"{flag} {text!r}: {name}={value} is not finite")
    return x
