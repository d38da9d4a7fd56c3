"""Contract 1, the `omnideft.sample/1` shard format, torch-free: the schema (schema.py), the writer of shards and
manifests (writer.py), the checker (check.py), and images (images.py): the one loader every image of omnideft goes
through, and deterministic encoding.

The boundary between the two packages: `omnideft` never imports `data_builders`; `data_builders` imports only this
package, `omnideft.camera`'s record and COLMAP reading, and `omnideft.errors` (tests/test_architecture.py).
"""
