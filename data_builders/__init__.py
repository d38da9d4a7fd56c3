"""Builders that turn raw datasets into `omnideft.sample/1` webdataset shards (contract 1).

One module per source dataset; image loading, degradations, captioners and the command-line runner are shared.

The boundary between the two packages: `omnideft` never imports `data_builders`; `data_builders` imports only
`omnideft.data.format` (writer, checker, schema, image encoding), `omnideft.camera`'s record and COLMAP reading
(numpy + pycolmap) and `omnideft.errors` — all free of torch (tests/test_architecture.py).
"""

BUILDERS_VERSION = "1"
