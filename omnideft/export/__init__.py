"""`omnideft export` (run.py): an adapter on its base, written as LoRA files or merged weights. The verb loads the
model through its family; the format work is adapters/export.py."""
