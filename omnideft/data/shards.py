"""Decode one contract-1 sample (webdataset's dict of member bytes) into an `Example`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from PIL import Image

from omnideft.data.format.images import ImageRejected, open_image
from omnideft.data.format.schema import SampleError, validate_meta


@dataclass
class Example:
    key: str
    task: str
    instruction: str
    inputs: list[Image.Image]
    output: Image.Image
    weight: float = 1.0
    camera: dict | None = None
    meta: dict = field(default_factory=dict)
    order_id: tuple = ()  # (source, position) in the training order, set by data.loader
    digests: tuple = ()  # sha256 of each image member's bytes: inputs in order, then the output (latent cache keys)


def decode_sample(raw: dict) -> Example:
    """webdataset dict (bytes per field) -> Example; raises SampleError naming the problem."""
    key = raw.get("__key__", "?")
    if "json" not in raw:
        raise SampleError(f"sample {key}: no {key}.json member")
    try:
        meta = validate_meta(json.loads(raw["json"]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SampleError(f"sample {key}: bad json ({exc})") from None
    members = [e["member"] for e in meta["inputs"]] + [meta["output"]["member"]]
    images = [_image(raw, key, m) for m in members]
    digests = tuple(hashlib.sha256(raw[m]).hexdigest() for m in members)
    return Example(key, meta["task"], meta["instruction"], images[:-1], images[-1], float(meta.get("weight", 1.0)),
                   meta.get("camera"), meta, digests=digests)


def _image(raw: dict, key: str, member: str) -> Image.Image:
    data = raw.get(member)
    if data is None:
        raise SampleError(f"sample {key}: member {member} missing")
    try:  # the loader of generate and the builders: training sees what inference sees
        return open_image(data, f"sample {key} member {member}")
    except ImageRejected as exc:  # the loader counts skips by the text after "sample KEY: "
        raise SampleError(f"sample {key}: member {member} does not decode ({exc.reason})") from None
