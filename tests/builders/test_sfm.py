import json

import numpy as np
import pycolmap
import pytest
from builder_sources import SFM_MISSING, SFM_VIEWS, decode, read_samples, shard_bytes, write_colmap

from data_builders.check import main as check_main
from data_builders.sfm import main
from omnideft.camera.record import quaternion_angle, scene_scale, vector_to_colmap
from omnideft.data.format.schema import placeholder_numbers


def build(project, out, kind="bin", *extra):
    return main(["--src", str(project / "sparse" / kind), "--images", str(project / "images"), "--out", str(out),
                 "--resolution", "32", "--context-views", "2", "--no-progress", *extra])


@pytest.mark.parametrize("kind", ["txt", "bin"])
def test_camera_numbers_round_trip(colmap_project, tmp_path, kind):
    assert build(colmap_project, tmp_path / kind, kind) == 0
    split = tmp_path / kind / "train"
    rec = pycolmap.Reconstruction(str(colmap_project / "sparse" / kind))
    by_name = {im.name: im for im in rec.images.values()}
    scale = scene_scale([im.projection_center() for im in by_name.values()])
    samples = read_samples(split)
    assert len(samples) == SFM_VIEWS - 1
    for s in samples:
        meta = s["meta"]
        cam = meta["camera"]
        target = meta["source"]["ids"][-1]
        im = by_name[target]
        pose = im.cam_from_world()
        x, y, z, w = pose.rotation.quat
        assert meta["task"] == "sfm/novel_view" and cam["convention"] == "colmap_cam_from_world"
        assert cam["model"] == "SIMPLE_RADIAL" and cam["params"] == pytest.approx([40.0, 32.0, 24.0, 0.02])
        assert np.allclose(cam["q_wxyz"], [w, x, y, z]) and np.allclose(cam["t"], pose.translation)
        # The vector is f/W, cx/W, cy/H, k, q, t/s (omnideft/camera/record.py): SIMPLE_RADIAL inverts exactly.
        back = vector_to_colmap(cam["vector"], cam["width"], cam["height"], cam["normalisation"]["scale"])
        assert back["params"] == pytest.approx([40.0, 32.0, 24.0, 0.02])
        q, t = back["q_wxyz"], back["t"]
        assert q[0] >= 0 and quaternion_angle(q, [w, x, y, z]) < 1e-6
        assert np.allclose(t, pose.translation) and cam["normalisation"]["scale"] == pytest.approx(scale)
        assert len(cam["vector"]) == 11
        assert len(meta["inputs"]) == len(meta["input_cameras"]) == 2
        assert placeholder_numbers(meta["instruction"]) == [1, 2]
        assert max(decode(s["out.jpg"]).size) == 32
    manifest = json.loads((split / "manifest.json").read_text())
    assert manifest["skipped"] == {"missing": {"count": 1, "examples": [SFM_MISSING]}}
    assert check_main([str(split)]) == 0


def test_text_and_binary_models_agree_and_workers_do_not_matter(colmap_project, tmp_path):
    assert build(colmap_project, tmp_path / "t", "txt") == 0
    assert build(colmap_project, tmp_path / "b1", "bin") == 0
    assert build(colmap_project, tmp_path / "b2", "bin", "--workers", "2") == 0
    assert shard_bytes(tmp_path / "b1" / "train") == shard_bytes(tmp_path / "b2" / "train")
    text = [s["meta"]["camera"]["vector"] for s in read_samples(tmp_path / "t" / "train")]
    binary = [s["meta"]["camera"]["vector"] for s in read_samples(tmp_path / "b1" / "train")]
    assert np.allclose(text, binary, atol=1e-12)


def test_unsupported_camera_model_refused(tmp_path, capsys):
    write_colmap(tmp_path / "sparse", model="EQUIRECTANGULAR", params=(64.0, 48.0))
    (tmp_path / "images").mkdir()
    assert build(tmp_path, tmp_path / "o", "txt") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "camera 1 uses EQUIRECTANGULAR" in err[0] and "no focal length" in err[0]


def test_not_a_colmap_model(tmp_path, capsys):
    (tmp_path / "sparse").mkdir()
    (tmp_path / "sparse" / "notes.txt").write_text("x")
    (tmp_path / "images").mkdir()
    assert main(["--src", str(tmp_path / "sparse"), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a COLMAP sparse model" in err[0] and "notes.txt" in err[0]
