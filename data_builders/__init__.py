"""Builders that turn raw datasets into `omnideft.sample/1` webdataset shards (contract 1).

One module per source dataset; the shard writer, image loading, degradations, captioners and the command-line
runner are shared. Only the shard-format parts of `omnideft` are imported: `omnideft.data.schema`,
`omnideft.camera` (the camera record and COLMAP reading; numpy + pycolmap, no torch) and `omnideft.errors`.
"""

BUILDERS_VERSION = "1"
