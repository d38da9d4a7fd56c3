import json

import numpy as np
import pycolmap
import pytest
from builder_sources import SFM_MISSING, SFM_VIEWS, decode, noise_image, read_samples, shard_bytes, write_colmap
from PIL import Image

from data_builders.check import main as check_main
from data_builders.images import fit_box
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
        # the record describes the stored 32x32 pixels: a centred 48x48 crop of the 64x48 view scaled by 2/3
        (size, (x0, y0, _, _), k) = fit_box(64, 48, 32)
        assert size == (32, 32) and (x0, y0, k) == pytest.approx((8, 0, 2 / 3))
        expected = [40.0 * k, (32.0 - x0) * k, (24.0 - y0) * k, 0.02]
        assert cam["model"] == "SIMPLE_RADIAL" and cam["params"] == pytest.approx(expected, abs=1e-12)
        assert (cam["width"], cam["height"]) == size
        assert cam["resized_from"]["params"] == pytest.approx([40.0, 32.0, 24.0, 0.02])
        assert np.allclose(cam["q_wxyz"], [w, x, y, z]) and np.allclose(cam["t"], pose.translation)
        # The vector is f/W, cx/W, cy/H, k, q, t/s (omnideft/camera/record.py): SIMPLE_RADIAL inverts exactly.
        back = vector_to_colmap(cam["vector"], cam["width"], cam["height"], cam["normalisation"]["scale"])
        assert back["params"] == pytest.approx(expected, abs=1e-12)
        q, t = back["q_wxyz"], back["t"]
        assert q[0] >= 0 and quaternion_angle(q, [w, x, y, z]) < 1e-6
        assert np.allclose(t, pose.translation) and cam["normalisation"]["scale"] == pytest.approx(scale)
        assert len(cam["vector"]) == 11
        assert len(meta["inputs"]) == len(meta["input_cameras"]) == 2
        assert placeholder_numbers(meta["instruction"]) == [1, 2]
        assert max(decode(s["out.jpg"]).size) == 32
    manifest = json.loads((split / "manifest.json").read_text())
    assert manifest["skipped"] == {"missing": {"count": 1, "examples": [
        f"{SFM_MISSING}: {colmap_project / 'images' / SFM_MISSING}"]}}
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


def spaced_project(root, names):
    """A text model written by pycolmap's writer (COLMAP's own: NAME last on the line) with phone-style names."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="SIMPLE_RADIAL", width=64, height=48,
                                                    params=[40.0, 32.0, 24.0, 0.02], camera_id=1))
    rng = np.random.default_rng(3)
    for i, name in enumerate(names):
        q = rng.normal(size=4)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(q / np.linalg.norm(q)), rng.normal(size=3) * 3)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=1, image_id=i + 1), pose)
    (root / "sparse").mkdir(parents=True)
    rec.write_text(str(root / "sparse"))
    (root / "images").mkdir()
    for i, name in enumerate(names):
        noise_image(40 + i, size=(64, 48)).save(root / "images" / name, quality=95)
    return root


def test_text_model_with_spaced_names_keeps_every_image(tmp_path):
    names = [f"IMG {i:04d} (copy).jpg" for i in range(6)]
    project = spaced_project(tmp_path / "p", names)
    lines = (project / "sparse" / "images.txt").read_text().splitlines()
    assert lines[4].startswith("1 ") and lines[4].endswith(" 1 IMG 0000 (copy).jpg")  # COLMAP: NAME last
    assert pycolmap.Reconstruction(str(project / "sparse")).images[1].name == "IMG"  # what pycolmap alone reads
    assert main(["--src", str(project / "sparse"), "--images", str(project / "images"), "--out", str(tmp_path / "o"),
                 "--resolution", "32", "--context-views", "1", "--no-progress"]) == 0
    samples = read_samples(tmp_path / "o" / "train")
    assert sorted(s["meta"]["source"]["ids"][-1] for s in samples) == names
    # generate --camera-from SPARSE --view NAME takes the same whole name and the same numbers
    from omnideft.generate.cameras import requested_cameras

    by_target = {s["meta"]["source"]["ids"][-1]: s["meta"]["camera"]["vector"] for s in samples}
    [vector] = requested_cameras(None, str(project / "sparse"), names[3], None, 0)
    assert np.allclose(vector[4:], by_target[names[3]][4:], atol=1e-12)  # same pose (the shard's intrinsics
    assert vector[0] == pytest.approx(40.0 / 64)  # describe its cropped pixels; generate uses the model's own)


def test_duplicate_names_refused_naming_the_lines(tmp_path, capsys):
    project = spaced_project(tmp_path / "p", ["a.jpg", "b.jpg", "c.jpg"])
    images_txt = project / "sparse" / "images.txt"
    images_txt.write_text(images_txt.read_text().replace(" c.jpg\n", " a.jpg\n"))
    assert build_spaced(project, tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images.txt line 9: image name 'a.jpg' is also used by images.txt line 5" in err[0]


def build_spaced(project, out):
    return main(["--src", str(project / "sparse"), "--images", str(project / "images"), "--out", str(out),
                 "--resolution", "32", "--context-views", "1", "--no-progress"])


@pytest.mark.parametrize("quaternion, message", [
    ("0 0 0 0", "has a zero quaternion (qw qx qy qz = 0 0 0 0)"),
    ("2 0 0 0", "has a non-unit quaternion (norm 2, q 2 0 0 0)"),
    ("nan 0 0 0", "has a non-finite pose"),
])
def test_bad_text_quaternion_refused(tmp_path, capsys, quaternion, message):
    project = spaced_project(tmp_path / "p", ["a.jpg", "b.jpg", "c.jpg"])
    images_txt = project / "sparse" / "images.txt"
    lines = images_txt.read_text().splitlines()
    parts = lines[6].split(" ")  # image 2's line (line 7 of the file)
    lines[6] = " ".join([parts[0], *quaternion.split(), *parts[5:]])
    images_txt.write_text("\n".join(lines) + "\n")
    assert build_spaced(project, tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"images.txt line 7: image 2 ('b.jpg') {message}" in err[0]
    assert not (tmp_path / "o").exists()


def test_zero_quaternion_in_binary_model_refused(colmap_project, tmp_path, capsys):
    import shutil
    import struct

    sparse = tmp_path / "sparse"
    shutil.copytree(colmap_project / "sparse" / "bin", sparse)
    data = bytearray((sparse / "images.bin").read_bytes())
    data[12:44] = struct.pack("<4d", 0, 0, 0, 0)  # first image's qw qx qy qz (after count and image_id)
    (sparse / "images.bin").write_bytes(bytes(data))
    assert pycolmap.Reconstruction(str(sparse)).images  # pycolmap itself reads it (as the identity rotation)
    assert main(["--src", str(sparse), "--images", str(colmap_project / "images"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images.bin byte 8: image" in err[0] and "zero quaternion" in err[0]


def test_all_images_missing_is_a_failure_naming_a_path(colmap_project, tmp_path, capsys):
    empty = tmp_path / "wrong_folder"
    empty.mkdir()
    args = ["--src", str(colmap_project / "sparse" / "txt"), "--images", str(empty), "--out", str(tmp_path / "o"),
            "--resolution", "32", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: built 0 of {SFM_VIEWS} planned samples: every sample was skipped (missing: {SFM_VIEWS}, "
                   f"e.g. view_0.jpg: {empty / 'view_0.jpg'}); check --src and the image folder"]
    # the manifest keeps the skip records; build-check flags the empty split
    assert check_main([str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out
    assert f"problem: train/manifest.json: no samples (every planned sample was skipped: missing: {SFM_VIEWS}, " in out


def test_min_samples_and_max_skip_fraction(colmap_project, tmp_path, capsys):
    assert build(colmap_project, tmp_path / "a", "txt", "--min-samples", str(SFM_VIEWS)) == 2
    assert f"built {SFM_VIEWS - 1} samples, fewer than --min-samples {SFM_VIEWS} (1 skipped: missing: 1, e.g. " \
           f"{SFM_MISSING}: " in capsys.readouterr().err
    assert build(colmap_project, tmp_path / "b", "txt", "--max-skip-fraction", "0.1") == 2
    assert f"skipped 1 of {SFM_VIEWS} planned samples (16.7%), more than --max-skip-fraction 0.1" in \
        capsys.readouterr().err
    assert build(colmap_project, tmp_path / "c", "txt", "--max-skip-fraction", "0.2") == 0


def test_check_flags_non_finite_camera_and_unsafe_member_names(colmap_project, tmp_path, capsys):
    import io
    import tarfile

    assert build(colmap_project, tmp_path / "o", "txt") == 0
    split = tmp_path / "o" / "train"
    shard = sorted(split.glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for i, (info, data) in enumerate(members):
            if i == 0:
                meta = json.loads(data)
                meta["camera"]["t"][1] = float("nan")
                meta["camera"]["q_wxyz"] = [0.0, 0.0, 0.0, 0.0]
                data = json.dumps(meta).encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("/etc/evil.json")
        evil.size = 2
        tar.addfile(evil, io.BytesIO(b"{}"))
    assert check_main([str(split)]) == 2
    out = capsys.readouterr().out
    key = members[0][0].name.split(".")[0]
    assert f"problem: train/{shard.name}:{key}: camera: camera has non-finite values" in out
    assert f"problem: train/{shard.name}:/etc/evil.json: member name is absolute" in out


def one_camera_project(root, model, width, height, params, poses, image_size=None, draw=None):
    """A COLMAP model (written by pycolmap) of one camera and its images (image_size: as stored on disk)."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=width, height=height, params=list(params),
                                                    camera_id=1))
    for i, (q_xyzw, t) in enumerate(poses):
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(q_xyzw, float)), np.asarray(t, float))
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"frame_{i}.png", camera_id=1, image_id=i + 1), pose)
    (root / "sparse" / "0").mkdir(parents=True)
    rec.write_text(str(root / "sparse" / "0"))
    (root / "images").mkdir()
    for i in range(len(poses)):
        img = noise_image(60 + i, size=image_size or (width, height))
        (draw(img, i) if draw else img).save(root / "images" / f"frame_{i}.png")
    return root


TWO_POSES = [((0, 0, 0, 1), (0, 0, 0)), ((0, 0, 0, 1), (1, 0, 0))]


def run(project, out, *extra):
    return main(["--src", str(project / "sparse" / "0"), "--images", str(project / "images"), "--out", str(out),
                 "--context-views", "0", "--no-progress", *extra])


def test_undistorted_images_next_to_distorted_model_refused(tmp_path, capsys):
    # image_undistorter's output is bigger than the distorted camera and has another aspect ratio
    project = one_camera_project(tmp_path / "p", "OPENCV", 64, 48, (40, 40, 32, 24, -0.2, 0.05, 0, 0), TWO_POSES,
                                 image_size=(70, 51))
    assert run(project, tmp_path / "o", "--resolution", "32") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --images {project / 'images'}: frame_0.png is 70x51 but its camera in "
                   f"{project / 'sparse' / '0'} is 64x48 (OPENCV): the images do not match the model (undistorted "
                   "images next to a distorted model, or resized copies?); use the images the model was made from, "
                   "or pass --rescale-cameras to scale the intrinsics to the image size"]
    assert run(project, tmp_path / "o", "--resolution", "32", "--rescale-cameras") == 2
    assert "the aspect ratios differ, so --rescale-cameras cannot match them" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_resized_copies_rescaled_on_request(tmp_path):
    project = one_camera_project(tmp_path / "p", "PINHOLE", 64, 48, (40, 44, 32, 24), TWO_POSES, image_size=(32, 24))
    assert run(project, tmp_path / "o", "--resolution", "32", "--rescale-cameras") == 0
    cam = read_samples(tmp_path / "o" / "train")[0]["meta"]["camera"]
    # the camera halved to the 32x24 copies, then fitted to 32x32 (sides multiples of 16): a centred 24x24 crop
    (size, (x0, y0, _, _), k) = fit_box(32, 24, 32)
    assert (cam["width"], cam["height"]) == size == (32, 32) and (x0, y0) == (4, 0)
    assert cam["params"] == pytest.approx([20 * k, 22 * k, (16 - x0) * k, 12 * k], abs=1e-12)
    assert cam["resized_from"] == {"width": 32, "height": 24, "params": [20.0, 22.0, 16.0, 12.0],
                                   "box": [4.0, 0.0, 28.0, 24.0]}


def test_wide_frame_keeps_aspect_and_intrinsics_follow_the_pixels(tmp_path):
    """A 668x240 frame to --resolution 512: stored 512x176, cropped not stretched; a point seen at (u, v) in the
    source lands where the stored camera record projects it."""
    f, cx, cy = 300.0, 334.0, 120.0
    u, v = 499.5, 90.5  # the centre of pixel (499, 90): COLMAP puts pixel centres at +0.5
    point = np.array([(u - cx) / f * 2.0, (v - cy) / f * 2.0, 2.0])  # seen there by frame 0 (identity pose)

    def dot(img, i):
        arr = np.zeros((240, 668, 3), np.uint8)
        if i == 0:
            arr[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3] = 255
        return Image.fromarray(arr)

    project = one_camera_project(tmp_path / "p", "SIMPLE_PINHOLE", 668, 240, (f, cx, cy), TWO_POSES, draw=dot)
    assert run(project, tmp_path / "o", "--resolution", "512") == 0
    [sample] = [s for s in read_samples(tmp_path / "o" / "train") if s["meta"]["source"]["ids"] == ["frame_0.png"]]
    out = np.asarray(decode(sample["out.jpg"]).convert("L"), np.float64)
    assert out.shape == (176, 512)
    cam = sample["meta"]["camera"]
    assert (cam["width"], cam["height"]) == (512, 176) and cam["resized_from"]["width"] == 668
    f2, cx2, cy2 = cam["params"]
    assert f2 == pytest.approx(f * 512 / 668, abs=1e-9)  # one scale for both axes: no stretch
    weights = np.where(out > 64, out, 0)
    ys, xs = np.mgrid[0:176, 0:512]
    seen = (weights * xs).sum() / weights.sum() + 0.5, (weights * ys).sum() / weights.sum() + 0.5
    predicted = f2 * point[0] / point[2] + cx2, f2 * point[1] / point[2] + cy2
    # the dot was drawn on whole pixels around (u, v): up to half a source pixel off, times the 0.77 scale
    print("DOTERR", np.subtract(seen, predicted))
    assert np.abs(np.subtract(seen, predicted)).max() < 0.5


def test_implausible_intrinsics_warned_and_recorded(tmp_path, capsys):
    project = one_camera_project(tmp_path / "p", "SIMPLE_RADIAL", 64, 48, (64 * 50, 32, 24, 0.9), TWO_POSES)
    assert run(project, tmp_path / "o", "--resolution", "32") == 0
    expected = ["camera of frame_0.png (SIMPLE_RADIAL 64x48): focal length 3200 px is 50x the width 64 "
                "(expected 0.1-10x)",
                "camera of frame_0.png (SIMPLE_RADIAL 64x48): radial distortion k=0.9 is large (|k| > 0.5)"]
    err = capsys.readouterr().err
    assert all(f"warning: {line}" in err for line in expected)
    manifest = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text())
    assert manifest["extra"]["camera_warnings"] == expected
