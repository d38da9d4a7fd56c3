"""Benchmark protocols: generate with fixed seeds from test shards, then score with the eval metrics; and compare
runs. A protocol is one file plus one line in `omnideft/bench/protocols.py`. Imports generate and eval, nothing
imports it but the CLI."""
