"""Caption provenance: a captioner that answers with nothing gives template captions that are counted in the manifest
and the summary, never cached as the model's, so a later run with a working model captions those images."""

import json

import pytest
from builder_sources import read_samples

from data_builders import captioners
from data_builders.insdet import main
from data_builders.merge import main as merge_main


class Inputs(dict):
    """The processor's output (transformers' BatchFeature): a dict that moves to a device."""

    def to(self, device):
        return self


class FakeQwen:
    """Stands in for a Qwen2.5-VL folder (processor and model in one): `answer` is what the model generates after
    the prompt, "" for a model that answers with nothing."""

    def __init__(self):
        self.answer, self.calls = "", 0

    def apply_chat_template(self, messages, add_generation_prompt):
        return "<prompt>"

    def __call__(self, text, images, return_tensors):
        import torch

        return Inputs(input_ids=torch.ones(1, 5, dtype=torch.long))

    def generate(self, input_ids, max_new_tokens, do_sample):
        import torch

        self.calls += 1
        return torch.cat([input_ids, torch.full((1, 3 if self.answer else 0), 7)], dim=1)

    def batch_decode(self, out, skip_special_tokens):
        return [self.answer if out.shape[1] else ""]


@pytest.fixture
def qwen(monkeypatch):
    fake = FakeQwen()

    def load(self):
        self._model = self._processor = fake

    monkeypatch.setattr(captioners.TransformersCaptioner, "_load", load)
    return fake


def build(root, out, cache, *extra):
    return main(["--src", str(root), "--out", str(out), "--resolution", "32", "--views", "2", "--no-progress",
                 "--parts", "objects,background", "--captioner", "qwen-vl", "--model", str(root / "qwen2.5-vl"),
                 "--caption-cache", str(cache), *extra])


def manifest(split):
    return json.loads((split / "manifest.json").read_text())


def test_a_silent_captioner_is_counted_and_not_cached(insdet_root, tmp_path, qwen, capsys):
    cache = tmp_path / "cache"
    assert build(insdet_root, tmp_path / "silent", cache) == 0
    assert qwen.calls == 9  # 7 object targets + 2 backgrounds
    assert manifest(tmp_path / "silent" / "train")["captions"] == {"template": 9}
    assert "captions: 0 from the model, 9 from templates" in capsys.readouterr().out
    assert {s["meta"]["caption"] for s in read_samples(tmp_path / "silent" / "train")} == {
        "a photo of aveda shampoo", "a photo of binder clips", "a photo of an indoor scene"}
    assert not list(cache.rglob("*.json"))  # nothing cached as if the model had said it
    # a cache from an earlier version, which stored the template as the model's caption, is not trusted either
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    for view in (insdet_root / "Objects" / "000_aveda_shampoo" / "images").glob("*.jpg"):
        key = captioners.content_hash(view.read_bytes())
        captioners.CaptionCache(cache, (folder / "backend.txt").read_text().strip()).put(key, "a photo of aveda "
                                                                                             "shampoo")

    qwen.answer, qwen.calls = "a red box on a table", 0  # the model works now: two partitions, then merged
    for part in ("0/2", "1/2"):
        assert build(insdet_root, tmp_path / "working", cache, "--shard-size", "4", "--partition", part) == 0
    assert merge_main([str(tmp_path / "working" / "train")]) == 0
    assert qwen.calls == 9
    assert manifest(tmp_path / "working" / "train")["captions"] == {"model": 9}
    assert {s["meta"]["caption"] for s in read_samples(tmp_path / "working" / "train")} == {"a red box on a table"}
    assert len(list(cache.rglob("*.json"))) == 9  # the model's captions are cached: a rerun asks nothing
    assert build(insdet_root, tmp_path / "again", cache) == 0
    assert qwen.calls == 9 and manifest(tmp_path / "again" / "train")["captions"] == {"model": 9}
    assert "captions: 9 from the model, 0 from templates" in capsys.readouterr().out


def test_template_captions_are_counted_as_templates(insdet_root, tmp_path):
    assert main(["--src", str(insdet_root), "--out", str(tmp_path / "o"), "--resolution", "32", "--no-progress",
                 "--parts", "background"]) == 0
    assert manifest(tmp_path / "o" / "train")["captions"] == {"template": 2}
