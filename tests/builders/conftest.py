"""Fixtures of the builder tests; the tiny sources are written in builder_sources.py."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from builder_sources import (  # noqa: E402,F401  (re-exported so pytest sees the fixtures)
    colmap_project,
    dreambooth_root,
    fake_openai,
    graph200k_dir,
    insdet_root,
    jsonl_source,
    visualcloze_tree,
)
