"""Builders that turn raw datasets into `omnideft.sample/1` webdataset shards (contract 1).

One module per source dataset; the shard writer, image loading, degradations, captioners and the command-line
runner are shared. Only `omnideft.data.schema` and `omnideft.errors` are imported from `omnideft`.
"""

BUILDERS_VERSION = "1"
