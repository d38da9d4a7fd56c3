"""Camera conditioning: the shard camera record and the 11-number vector (record.py, numpy only), COLMAP reading
(colmap.py), camera strings (parse.py), the `<cam>` token and CameraEncoder (token.py, encoder.py), their
injection into OmniGen's transformer (conditioning.py), the prompt wording (prompt.py) and the recipe's `camera:`
section (spec.py). docs/camera.md.

Importing this package stays light (numpy): builders use it; torch parts are imported from their modules.
"""

from omnideft.camera.record import (
    LAYOUT,
    MODELS,
    VECTOR_FIELDS,
    VECTOR_SIZE,
    camera_record,
    camera_vector,
    interpolate_vectors,
    record_vector,
    scene_scale,
    vector_to_colmap,
)

__all__ = ["LAYOUT", "MODELS", "VECTOR_FIELDS", "VECTOR_SIZE", "camera_record", "camera_vector",
           "interpolate_vectors", "record_vector", "scene_scale", "vector_to_colmap"]
