"""In-context instructions: example (input, output) pairs first, then the query.

The layout matches the training shards of the demo and the interleaved builders: example k's images are
`<|image_{2k-1}|>` → `<|image_{2k}|>`, the query's own images are numbered after them. `omnideft generate` composes
its prompt here and the demo writes its shards with the same sentence.
"""

from __future__ import annotations

import re

from omnideft.data.format.schema import TAG_RE, tag_numbers


def example_clause(i: int) -> str:
    """The sentence for in-context example i (0-based)."""
    return f"example {i + 1}: <img><|image_{2 * i + 1}|></img> becomes <img><|image_{2 * i + 2}|></img>."


def compose_in_context(prompt: str, query_images: list, examples: list[tuple] = ()) -> tuple[str, list]:
    """Return (instruction, images). `prompt` may reference its query images as <|image_1|>…; they are
    renumbered after the examples. Query images the prompt does not mention are appended as tags."""
    n_ex = len(examples)
    images: list = []
    parts = []
    for i, (inp, out) in enumerate(examples):
        parts.append(example_clause(i))
        images += [inp, out]
    shift = 2 * n_ex
    query = TAG_RE.sub(lambda m: f"<|image_{int(m.group(1)) + shift}|>", prompt)
    mentioned = set(tag_numbers(prompt))
    missing = [k for k in range(1, len(query_images) + 1) if k not in mentioned]
    if missing:
        query = (query + " " + " ".join(f"<img><|image_{k + shift}|></img>" for k in missing)).strip()
    parts.append(query)
    images += list(query_images)
    return re.sub(r"\s+", " ", " ".join(parts)).strip(), images
