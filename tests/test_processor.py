import numpy as np
import pytest
import torch
from PIL import Image

from omnideft.errors import UserError
from omnideft.families.omnigen.collate import collate_prompts
from omnideft.families.omnigen.processor import NEGATIVE_PROMPT, OmniGenProcessor, crop_image
from tests.diffusers_reference import diffusers_processor_module


def _img(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_crop_image_rules():
    assert crop_image(_img(40, 56), 1024).size == (32, 48)  # centre-crop to multiples of 16
    assert crop_image(_img(100, 10), 1024).size[1] == 16  # short side upscaled to >= 16
    big = crop_image(_img(300, 200), 128)
    assert max(big.size) <= 128 and big.size[0] % 16 == 0 and big.size[1] % 16 == 0


def test_hand_computed_small_case(tiny):
    tok = tiny.tokenizer
    proc = OmniGenProcessor(tok, max_image_size=1024)
    enc = proc.encode("red <img><|image_1|></img> blue", [_img(32, 48)])
    head = tok("<|user|>\nGenerate an image according to the following instructions\nred <img>").input_ids
    tail = tok("</img> blue<|end|>\n<|assistant|>\n<|diffusion|>").input_ids[1:]  # BOS dropped
    n = 32 * 48 // 256
    assert enc.input_ids == head + [0] * n + tail
    assert enc.image_spans == [(len(head), len(head) + n)]
    assert enc.pixel_values[0].shape == (3, 48, 32)
    assert enc.pixel_values[0].min() >= -1 and enc.pixel_values[0].max() <= 1


def test_collate_mask_positions_by_hand(tiny):
    proc = OmniGenProcessor(tiny.tokenizer)
    a = proc.encode("red <img><|image_1|></img>", [_img(16, 32)])  # 2 image tokens
    b = proc.encode("blue")
    batch = collate_prompts([a, b], (16, 16), pad_token_id=2)  # 1 output token
    la, lb = len(a.input_ids), len(b.input_ids)
    L = la + 1 + 1
    assert batch["input_ids"].shape == (2, la) and batch["attention_mask"].shape == (2, L, L)
    pad = la - lb
    m = batch["attention_mask"][1]
    assert (batch["input_ids"][1, :pad] == 2).all()
    assert batch["position_ids"][1].tolist() == [0] * pad + list(range(L - pad))
    assert (m[:pad] == 1).all() and (m[pad:, :pad] == 0).all()  # pad rows open, pad columns closed
    assert (m[pad:la + 1, la + 1:] == 0).all()  # text/time never see the output token
    assert m[-1, pad:].eq(1).all()  # output row sees all real tokens
    s, e = batch["input_image_sizes"][0][0]
    ma = batch["attention_mask"][0]
    assert e - s == 2 and ma[s, s + 1] == 1 and ma[s, e] == 0  # bidirectional inside the span only


def test_placeholder_errors_name_the_tag(tiny):
    proc = OmniGenProcessor(tiny.tokenizer)
    with pytest.raises(UserError, match=r"missing <\|image_2\|>"):
        proc.encode("<img><|image_1|></img>", [_img(16, 16), _img(16, 16)])
    with pytest.raises(UserError, match=r"extra <\|image_3\|>"):
        proc.encode("<img><|image_1|></img> <img><|image_3|></img>", [_img(16, 16)])


@pytest.mark.parametrize("case", ["text", "two_images_repeated"])
def test_matches_diffusers_processor_token_for_token(tiny, case):
    mod = diffusers_processor_module()
    ref = mod.OmniGenMultiModalProcessor(tiny.tokenizer, max_image_size=64)
    proc = OmniGenProcessor(tiny.tokenizer, max_image_size=64)
    if case == "text":
        prompts, images = ["a red circle on a blue square", "dog"], None
    else:
        prompts = ["<img><|image_1|></img> then <img><|image_2|></img> and <img><|image_1|></img> again", "x"]
        images = [[_img(40, 56, 1), _img(80, 70, 2)], None]
    want = ref(prompts, images, height=32, width=48, use_img_cfg=images is not None)
    rows = []
    for i, p in enumerate(prompts):
        imgs = images[i] if images else None
        rows.append(proc.encode(p, imgs))
    neg = [proc.encode(NEGATIVE_PROMPT) for _ in prompts]
    rows = rows + neg
    if images is not None:
        rows += [proc.encode_image_only(images[i]) if images[i] else neg[i] for i in range(len(prompts))]
    got = collate_prompts(rows, (32, 48))
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert torch.equal(got[key].to(want[key].dtype), want[key]), key
    assert got["input_image_sizes"] == want["input_image_sizes"]
    assert len(got["input_pixel_values"]) == len(want["input_pixel_values"])
    for g, w in zip(got["input_pixel_values"], want["input_pixel_values"]):
        assert torch.allclose(g, w, atol=1e-6)
