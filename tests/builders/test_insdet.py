import json

import pytest
from builder_sources import decode, read_samples, shard_bytes

from data_builders.check import main as check_main
from data_builders.insdet import main
from omnideft.data.format.schema import placeholder_numbers

SECRET = "test-secret-key-123"


def build(root, out, *extra):
    return main(["--src", str(root), "--out", str(out), "--resolution", "32", "--views", "2", "--no-progress",
                 *extra])


def test_objects_scenes_background_with_templates(insdet_root, tmp_path):
    assert build(insdet_root, tmp_path / "o", "--captioner", "none") == 0
    split = tmp_path / "o" / "train"
    samples = read_samples(split)
    tasks = [s["meta"]["task"] for s in samples]
    assert tasks.count("insdet/object") == 7 and tasks.count("insdet/scene") == 2
    assert tasks.count("insdet/background") == 2
    for s in samples:
        meta = s["meta"]
        assert placeholder_numbers(meta["instruction"]) == list(range(1, len(meta["inputs"]) + 1))
        if meta["task"] == "insdet/object":
            assert len(meta["inputs"]) == 2 and meta["source"]["ids"][-1] not in meta["source"]["ids"][:-1]
            assert meta["caption"] in ("a photo of aveda shampoo", "a photo of binder clips")
        if meta["task"] == "insdet/scene" and meta["source"]["scene"] == "easy/leisure_zone":
            assert [b["name"] for b in meta["source"]["boxes"]] == ["001_binder_clips", "000_aveda_shampoo"]
            expected = [30 / 64, 10 / 48, 60 / 64, 40 / 48]
            assert meta["source"]["boxes"][0]["xyxy_norm"] == pytest.approx(expected, abs=1e-6)
            assert len(meta["inputs"]) == 2 and "binder clips <img><|image_1|></img>" in meta["instruction"]
    manifest = json.loads((split / "manifest.json").read_text())
    [(reason, entry)] = manifest["skipped"].items()
    assert reason == "bad_metadata" and entry["count"] == 1
    assert entry["examples"][0].startswith("leisure_zone/rgb_001.jpg: ") and "rgb_001.xml" in entry["examples"][0]
    assert check_main([str(split)]) == 0


def test_foreground_mask_whitens_background(insdet_root, tmp_path):
    assert build(insdet_root, tmp_path / "m", "--parts", "objects", "--foreground-mask") == 0
    for s in read_samples(tmp_path / "m" / "train"):
        out = decode(s["out.jpg"]).convert("RGB")
        assert min(out.getpixel((1, 1))) > 240  # outside the mask: white (up to JPEG error)


def test_openai_captioner_uses_env_key_and_caches(insdet_root, tmp_path, fake_openai, monkeypatch, capsys):
    monkeypatch.setenv("MY_CAPTION_KEY", SECRET)
    cache = tmp_path / "cache"
    args = ["--captioner", "openai", "--endpoint", fake_openai.url, "--model", "qwen-test",
            "--api-key-env", "MY_CAPTION_KEY", "--caption-cache", str(cache), "--parts", "objects,background"]
    assert build(insdet_root, tmp_path / "a", *args) == 0
    first = len(fake_openai.requests)
    assert first == 9  # 7 object targets + 2 backgrounds, each image captioned once
    assert set(fake_openai.auth) == {f"Bearer {SECRET}"}
    assert fake_openai.requests[0]["model"] == "qwen-test"
    assert fake_openai.requests[0]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg")
    captions = {s["meta"]["caption"] for s in read_samples(tmp_path / "a" / "train")}
    assert all(c.startswith("a shiny test object") for c in captions) and len(captions) == 9
    assert build(insdet_root, tmp_path / "b", *args, "--workers", "2") == 0
    assert len(fake_openai.requests) == first  # rerun: every caption came from the cache
    assert {s["meta"]["caption"] for s in read_samples(tmp_path / "b" / "train")} == captions
    manifest_text = (tmp_path / "a" / "train" / "manifest.json").read_text()
    out = capsys.readouterr()
    assert SECRET not in manifest_text + out.out + out.err
    assert json.loads(manifest_text)["args"]["api_key_env"] == "MY_CAPTION_KEY"


def test_not_insdet_layout(tmp_path, capsys):
    (tmp_path / "src" / "images").mkdir(parents=True)
    assert main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected the InsDet layout" in err[0] and "images" in err[0]
    assert main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--captioner", "openai"]) == 2


def test_common_mask_namings_give_the_same_shards(insdet_root, tmp_path):
    import shutil

    renamed = tmp_path / "renamed"
    shutil.copytree(insdet_root, renamed)
    for k, mask in enumerate(sorted(renamed.glob("Objects/*/masks/*.png"))):
        if k % 2:  # <stem>_mask.png in masks/
            mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
        else:  # <stem>_mask.png beside the view, as some re-packaged copies keep them
            mask.rename(mask.parent.parent / "images" / f"{mask.stem}_mask.png")
    args = ("--parts", "objects", "--foreground-mask")
    assert build(insdet_root, tmp_path / "a", *args) == 0
    assert build(renamed, tmp_path / "b", *args) == 0
    assert shard_bytes(tmp_path / "a" / "train") == shard_bytes(tmp_path / "b" / "train")
    manifest = json.loads((tmp_path / "b" / "train" / "manifest.json").read_text())
    assert manifest["skipped"] == {} and manifest["samples"] == 7  # the masks beside the views are not views


def test_missing_mask_names_the_places_looked(insdet_root, tmp_path):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(insdet_root, root)
    (root / "Objects" / "001_binder_clips" / "masks" / "002.png").unlink()
    assert build(root, tmp_path / "o", "--parts", "objects", "--foreground-mask") == 0
    missing = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text())["skipped"]["missing"]
    assert "no mask for " in missing["examples"][0]
    assert "(looked for masks/002.png, masks/002_mask.*, 002_mask.* beside it)" in missing["examples"][0]


def test_parts_scenes_without_scenes_folder(insdet_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "r"
    shutil.copytree(insdet_root, root)
    shutil.rmtree(root / "Scenes")
    assert build(root, tmp_path / "o", "--parts", "objects,scenes") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --parts scenes: expected the folder {root / 'Scenes'}, found ['Background', 'Objects'] in "
                   "--src (leave scenes out of --parts to build without it)"]
