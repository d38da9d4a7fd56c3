"""Every image enters through one loader (`omnideft.data.format.images.open_image`): the builders, `generate`, `eval`
and the studio see the same pixels for 16-bit and transparent files, and refuse too many pixels (from the header,
before decoding) and shapes the model cannot take with one line naming the file and its size."""

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import omnideft.families.omnigen.processor as processor
from data_builders.images import SkipSample
from data_builders.images import load_image as builder_load_image
from data_builders.jsonl import main as build_jsonl
from omnideft.data.format.images import MAX_ASPECT, ImageRejected
from omnideft.data.shards import decode_sample
from omnideft.images import load_image
from omnideft.studio.session import Request, Studio
from tests.helpers import assert_one_line_error, run_cli_here

SIDE = 32


def write_png(path: Path, width: int, height: int, bit_depth: int, colour_type: int, row: bytes,
              rows: int | None = None) -> Path:
    """A PNG whose rows all hold `row`, compressed as it is written: a 12000x12000 file without 144 MB in memory
    (`rows` < height: only the header is right). Also how to get a 48-bit RGB PNG, which PIL cannot write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\0" + row) for _ in range(height if rows is None else rows)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> dict[str, Path]:
    """16-bit and transparent images of every kind, 32x32 noise; and the 16-bit values the files hold."""
    root = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    files = {}
    grey16 = rng.integers(0, 65536, (SIDE, SIDE), dtype=np.uint16)
    Image.fromarray(grey16).save(files.setdefault("grey16", root / "grey16.png"))
    assert Image.open(files["grey16"]).mode == "I;16"
    rgb48 = rng.integers(0, 65536, SIDE * 3, dtype=np.uint16)
    write_png(files.setdefault("rgb48", root / "rgb48.png"), SIDE, SIDE, 16, 2, rgb48.astype(">u2").tobytes())
    rgba = rng.integers(0, 256, (SIDE, SIDE, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(files.setdefault("rgba", root / "rgba.png"))
    Image.fromarray(rgba[..., 1:3].copy(), "LA").save(files.setdefault("la", root / "la.png"))
    palette = Image.fromarray(rgba[..., 0] // 64, "P")
    palette.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200, 90, 90, 90])
    palette.save(files.setdefault("p_trns", root / "p_trns.png"), transparency=2)
    return {"files": files, "grey16": grey16, "rgb48": rgb48, "rgba": rgba}


def test_sixteen_bits_are_scaled_and_alpha_is_flattened_on_white(odd):
    f = odd["files"]
    expected16 = np.round(odd["grey16"] / 257.0).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(f["grey16"])), np.repeat(expected16[..., None], 3, axis=2))
    rgb48 = np.asarray(load_image(f["rgb48"])).astype(int)
    assert np.abs(rgb48 - np.round(odd["rgb48"].reshape(SIDE, 3) / 257.0)[None]).max() <= 1  # PIL keeps the high byte
    rgba = odd["rgba"].astype(float)
    on_white = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
    assert np.abs(np.asarray(load_image(f["rgba"])) - on_white).max() <= 1
    p_trns = np.asarray(load_image(f["p_trns"]))
    index = odd["rgba"][..., 0] // 64
    assert (p_trns[index == 2] == 255).all() and (p_trns[index == 0] == [200, 0, 0]).all()
    # the builders' loader gives the same arrays
    for name, path in f.items():
        assert np.array_equal(np.asarray(builder_load_image(path)), np.asarray(load_image(path))), name


@pytest.fixture(scope="module")
def built(odd, tmp_path_factory) -> dict[str, np.ndarray]:
    """The odd images as build-jsonl stores them in a shard (target images, lossless PNG): what training reads."""
    f = odd["files"]
    root = tmp_path_factory.mktemp("built")
    lines = [{"task_type": "t2i", "instruction": name, "input_images": [], "output_image": str(path)}
             for name, path in f.items()]
    (root / "odd.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert build_jsonl(["--src", str(root / "odd.jsonl"), "--images", str(root), "--allow-outside",
                        "--out", str(root / "out"), "--no-progress"]) == 0
    pixels = {}
    for shard in sorted((root / "out" / "train").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                key, image = name[: -len(".json")], json.loads(data)["instruction"]
                pixels[image] = np.asarray(Image.open(io.BytesIO(members[f"{key}.out.png"])))
                # a shard written elsewhere, holding the file itself: training reads it as the builders would
                raw = {"__key__": key, "json": data, "out.png": f[image].read_bytes()}
                assert np.array_equal(np.asarray(decode_sample(raw).output), pixels[image]), image
    assert sorted(pixels) == sorted(f)
    return pixels


@pytest.fixture
def model_inputs(monkeypatch) -> list[np.ndarray]:
    """The pixels of every image the OmniGen processor crops for the model, in order."""
    seen, crop = [], processor.crop_image

    def spy(image, max_image_size):
        seen.append(np.asarray(image))
        return crop(image, max_image_size)

    monkeypatch.setattr(processor, "crop_image", spy)
    return seen


def test_generate_eval_and_studio_see_the_pixels_the_builders_store(odd, built, model_inputs, tmp_path):
    names = list(odd["files"])
    prompt = " ".join(f"<img><|image_{k + 1}|></img>" for k in range(len(names)))
    images = [a for name in names for a in ("--image", str(odd["files"][name]))]
    proc = run_cli_here("generate", "--no-progress", "--model", "tiny", "--prompt", prompt, *images, "--steps", "1",
                        "--height", "32", "--width", "32", "--out", str(tmp_path / "g.png"))
    assert proc.returncode == 0, proc.stderr
    assert len(model_inputs) >= len(names)
    for name, seen in zip(names, model_inputs):
        assert np.array_equal(seen, built[name]), name
    # the studio: an upload reaches the generator as its file
    model_inputs.clear()
    studio = Studio("tiny", outputs=str(tmp_path / "studio"))
    studio.generate(Request(prompt="<img><|image_1|></img> <img><|image_2|></img>", query=str(odd["files"]["rgba"]),
                            inputs=[str(odd["files"]["grey16"])], steps=1, height=32, width=32,
                            same_as_query=False))
    assert len(model_inputs) >= 2
    assert np.array_equal(model_inputs[0], built["rgba"]) and np.array_equal(model_inputs[1], built["grey16"])
    # eval: the files as predictions, the shard's pixels as references: nothing differs
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in names:
        Image.fromarray(built[name]).save(refs / f"{name}.png")
    proc = run_cli_here("eval", "--pred", str(odd["files"]["rgba"].parent), "--ref", str(refs), "--metrics", "rmse",
                        "--out", str(tmp_path / "scores"), "--no-progress", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    rmse = {row.split(",")[0]: row.split(",")[-1] for row in
            (tmp_path / "scores" / "scores.csv").read_text().splitlines()[1:]}
    assert rmse == {name: "0.0" for name in names}


def test_a_huge_image_is_refused_from_its_header(tmp_path, monkeypatch):
    (tmp_path / "pred").mkdir()
    huge = write_png(tmp_path / "pred" / "huge.png", 12000, 12000, 8, 0, bytes(12000))
    assert huge.stat().st_size < 200_000

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    proc = run_cli_here("generate", "--model", "tiny", "--prompt", "x", "--image", str(huge), "--out",
                        str(tmp_path / "g.png"))
    assert_one_line_error(proc, "huge.png", "12000x12000", "144.0 MP", "120 MP")
    proc = run_cli_here("eval", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "pred"), "--metrics",
                        "rmse", "--out", str(tmp_path / "scores"), "--no-progress", "--device", "cpu")
    assert_one_line_error(proc, "huge.png", "12000x12000")
    with pytest.raises(SkipSample) as skip:
        builder_load_image(huge)
    assert skip.value.reason == "too_large" and "12000x12000" in str(skip.value)
    # past PIL's own decompression-bomb limit (179 MP) too: refused, naming the file
    bomb = write_png(tmp_path / "bomb.png", 20000, 20000, 8, 0, bytes(20000), rows=1)
    with pytest.raises(ImageRejected) as rejected:
        load_image(bomb)
    assert rejected.value.reason == "too_large" and "bomb.png" in str(rejected.value)


def test_an_image_narrower_than_the_model_takes_is_one_line(tmp_path, model_inputs):
    narrow = tmp_path / "narrow.png"
    Image.new("RGB", (10000, 16), "red").save(narrow)
    for sizes in ([], ["--height", "64", "--width", "64"]):
        proc = run_cli_here("generate", "--model", "tiny", "--prompt", "<img><|image_1|></img>", "--image",
                            str(narrow), *sizes, "--out", str(tmp_path / "g.png"))
        assert_one_line_error(proc, "narrow.png", "10000x16", f"{MAX_ASPECT}:1")
    with pytest.raises(SkipSample) as skip:
        builder_load_image(narrow)
    assert skip.value.reason == "bad_aspect"
    # the narrowest accepted shape: the tiny model's input side is 512, so 1024x16 is centre-cropped to 512x16 where
    # OmniGen's crop_arr made it 1024x16, past the position table
    Image.new("RGB", (MAX_ASPECT * 16, 16), "red").save(narrow)
    proc = run_cli_here("generate", "--no-progress", "--model", "tiny", "--prompt", "<img><|image_1|></img>",
                        "--image", str(narrow), "--steps", "1", "--out", str(tmp_path / "g.png"))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "g.png").size == (512, 16)
    assert processor.crop_image(Image.new("RGB", (1024, 16)), 512).size == (512, 16)


def test_what_held_before_still_holds(tmp_path):
    """Truncated JPEGs, CMYK, palettes, GIFs, 1x1 images, unknown modes: through the one loader."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    photo.save(tmp_path / "full.jpg")
    full = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageRejected, match=r"(?i)image .*cut.jpg is unreadable \(.*truncated"):
        load_image(tmp_path / "cut.jpg")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo.quantize(16).save(tmp_path / "anim.gif", save_all=True, append_images=[photo.quantize(8)])
    Image.new("L", (1, 1), 7).save(tmp_path / "dot.png")
    for name, size in (("cmyk.jpg", (SIDE, SIDE)), ("anim.gif", (SIDE, SIDE)), ("dot.png", (1, 1))):
        img = load_image(tmp_path / name)
        assert (img.mode, img.size) == ("RGB", size), name
        assert np.array_equal(np.asarray(img), np.asarray(builder_load_image(tmp_path / name))), name
    Image.fromarray(rng.random((4, 4), dtype=np.float32)).save(tmp_path / "float.tif")
    proc = run_cli_here("generate", "--model", "tiny", "--prompt", "x", "--image", str(tmp_path / "float.tif"),
                        "--out", str(tmp_path / "g.png"))
    assert_one_line_error(proc, "float.tif", "mode F")
