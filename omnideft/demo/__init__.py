"""The offline demo (run.py): the small pretrained OmniGen learns new tasks with a DEFT adapter, measured."""

# Light to import: `omnideft --help` shows them.
DEFAULTS = {"steps": 200, "samples": 256, "queries": 16, "retention_queries": 4, "replay": 0.25}
DEFAULTS_OMNIGEN2 = {"steps": 30, "samples": 8}  # `demo --family omnigen2`: the tiny OmniGen2 (demo/omnigen2.py)
