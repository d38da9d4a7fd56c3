import json
import tarfile

import pytest
from builder_sources import member_names, noise_image
from PIL import Image

from data_builders.check import main as check_main
from omnideft.data.format.schema import SampleError
from omnideft.data.format.writer import BuiltSample, InputImage, ShardWriter, file_sha256


def sample(i: int, n_inputs: int = 2) -> BuiltSample:
    tags = " ".join(f"<img><|image_{k + 1}|></img>" for k in range(n_inputs))
    return BuiltSample(key=f"s_{i:04d}", task="demo/test", instruction=f"combine {tags}",
                       inputs=[InputImage(noise_image(10 * i + k), "cond") for k in range(n_inputs)],
                       output=noise_image(10 * i + 9), output_ext="jpg", source={"ids": [str(i)]})


def write(out, n=5, **kw):
    with ShardWriter(out, split="train", shard_size=2, builder="demo", builder_version="1",
                     args={"api_key": "sk-secret", "endpoint": "http://user:pw@host/v1?token=x", "n": n},
                     source_fingerprint="abc", **kw) as w:
        for i in range(n):
            w.add(sample(i))
        w.skip("corrupt", "id9")
        w.skip("corrupt", "id1")
    return out / "train"


def test_layout_members_headers_and_manifest(tmp_path):
    split = write(tmp_path)
    assert sorted(p.name for p in split.iterdir()) == ["manifest.json", "shard-000000.tar", "shard-000001.tar",
                                                       "shard-000002.tar"]
    assert member_names(split / "shard-000000.tar") == [
        "s_0000.json", "s_0000.in0.png", "s_0000.in1.png", "s_0000.out.jpg",
        "s_0001.json", "s_0001.in0.png", "s_0001.in1.png", "s_0001.out.jpg"]
    with tarfile.open(split / "shard-000000.tar") as tar:
        for m in tar:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    manifest = json.loads((split / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 1]
    for s in manifest["shards"]:
        assert s["sha256"] == file_sha256(split / s["name"]) and s["bytes"] == (split / s["name"]).stat().st_size
    assert manifest["tasks"] == {"demo/test": 5}
    assert manifest["skipped"] == {"corrupt": {"count": 2, "examples": ["id1", "id9"]}}
    text = json.dumps(manifest)
    assert "sk-secret" not in text and "pw@" not in text and "token=x" not in text
    assert manifest["builder"] == "demo" and manifest["source_fingerprint"] == "abc" and manifest["created"]


def test_same_samples_give_identical_bytes(tmp_path):
    a, b = write(tmp_path / "a"), write(tmp_path / "b")
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_exception_leaves_no_manifest_and_only_tmp_files(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, shard_size=10, builder="demo", builder_version="1") as w:
            w.add(sample(0))
            raise RuntimeError("killed")
    names = [p.name for p in (tmp_path / "train").iterdir()]
    assert names == [".tmp-shard-000000.tar"]


def test_bad_placeholders_rejected(tmp_path):
    bad = sample(0)
    bad.instruction = "only <img><|image_1|></img>"
    with ShardWriter(tmp_path, builder="demo", builder_version="1") as w:
        with pytest.raises(SampleError, match="missing <\\|image_2\\|>"):
            w.add(bad)
        with pytest.raises(SampleError, match="key"):
            w.add(BuiltSample("a.b", "demo/test", "x", [], Image.new("RGB", (4, 4))))


def test_check_passes_clean_and_reports_tampering(tmp_path, capsys):
    split = write(tmp_path)
    assert check_main([str(tmp_path)]) == 0
    assert "5 samples" in capsys.readouterr().out
    shard = split / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 0xFF  # inside tar padding: still a valid tar, but the checksum no longer matches
    shard.write_bytes(bytes(data))
    assert check_main([str(split)]) == 2
    out = capsys.readouterr().out
    assert "problem: train/shard-000001.tar: sha256 differs from the manifest" in out


def test_check_reports_size_mismatch_and_undecodable_image(tmp_path, capsys):
    split = tmp_path / "train"
    split.mkdir()
    meta = {"schema": "omnideft.sample/1", "task": "demo/test", "instruction": "<img><|image_1|></img>",
            "inputs": [{"member": "in0.png", "width": 99, "height": 32, "role": "x"}],
            "output": {"member": "out.png", "width": 32, "height": 32}}
    import io
    buf = io.BytesIO()
    noise_image(1).save(buf, format="PNG")
    members = [("k.json", json.dumps(meta).encode()), ("k.in0.png", buf.getvalue()), ("k.out.png", b"junk")]
    with tarfile.open(split / "shard-000000.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert check_main([str(split)]) == 2
    out = capsys.readouterr().out
    assert "image is 32x32, json says 99x32" in out
    assert "k.out.png: does not decode" in out
    assert "no manifest.json" in out


def test_check_reports_truncated_shard(tmp_path, capsys):
    split = write(tmp_path)
    shard = split / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:700])  # cut inside the first image member
    assert check_main([str(split)]) == 2
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("problem:")]
    assert any("shard-000000.tar" in line for line in problems)
    assert any("sha256 differs" in line or "not a readable tar" in line for line in problems)


def test_secret_filter_keeps_ordinary_arguments():
    from omnideft.data.format.writer import is_secret_arg, redact_args

    secrets = ["api_key", "hf_token", "access_token", "password", "caption_secret", "auth", "openai-api-key"]
    ordinary = ["token", "keep_tokens", "max_keyframes", "monkey", "api_key_env", "tokenizer", "author"]
    assert [n for n in secrets if not is_secret_arg(n)] == []
    assert [n for n in ordinary if is_secret_arg(n)] == []
    assert redact_args({"token": "sks", "api_key": "sk-1"}) == {"token": "sks", "api_key": "<redacted>"}
