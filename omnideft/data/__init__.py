"""Shard format (contract 1) and shard reading. `schema` is import-light so data_builders can use it."""
