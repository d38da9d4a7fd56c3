"""Shards: the contract-1 format (format/, torch-free, shared with data_builders) and reading them for training and
evaluation (indexed.py, order.py, loader.py, shards.py, sources.py)."""
