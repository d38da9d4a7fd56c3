"""OmniGen (v1)'s prompt template and `<img><|image_k|></img>` placeholders, in PIL + numpy (no torchvision).

Semantics follow OmniGen v1 / diffusers' OmniGenMultiModalProcessor: the prompt is wrapped in the chat template,
split on image tags, each chunk tokenised separately (leading BOS dropped from chunks after the first), and each
tag replaced by H*W/256 placeholder ids (0) that the transformer overwrites with the image's latent patches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from omnideft.data.format.schema import tag_numbers
from omnideft.prompts.tags import check_tags

TAG = re.compile(r"<\|image_\d+\|>")
CFG_PROMPT = "<cfg>"  # what condition dropout replaces the instruction with during training
NEGATIVE_PROMPT = (
    "low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, poorly drawn hands,"
    " poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, extra limbs, cloned "
    "face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, extra arms, extra legs, fused "
    "fingers, too many fingers."
)
PIXELS_PER_TOKEN = 16  # 8x VAE then 2x2 patches


def wrap_prompt(prompt: str) -> str:
    return (
        "<|user|>\nGenerate an image according to the following instructions\n"
        f"{prompt}<|end|>\n<|assistant|>\n<|diffusion|>"
    )


def crop_image(image: Image.Image, max_image_size: int) -> Image.Image:
    """OmniGen's `crop_arr`: keep aspect, long side <= max, short side >= 16, both sides multiples of 16 (centred
    crops of the rounding). An image narrower than max/16 : 1 would need a long side over max once its short side is
    raised to 16 (OmniGen's crop_arr then passes the model's position table): its long side is cropped to max, centred.
    The loader refuses anything narrower than 64:1 (omnideft.data.format.images.MAX_ASPECT)."""
    while min(*image.size) >= 2 * max_image_size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    if max(*image.size) > max_image_size:
        scale = max_image_size / max(*image.size)
        image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    if min(*image.size) < 16:
        scale = 16 / min(*image.size)
        image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    h, w = arr.shape[:2]
    dy, dx = h - min(h, max_image_size) // 16 * 16, w - min(w, max_image_size) // 16 * 16
    arr = arr[dy // 2 : h - (dy - dy // 2), dx // 2 : w - (dx - dx // 2)]
    return Image.fromarray(arr)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> float32 [3, H, W] in [-1, 1] (ToTensor + Normalize(0.5, 0.5))."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).sub(0.5).div(0.5).contiguous()


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    pixel_values: list[torch.Tensor] = field(default_factory=list)  # [3, H, W] each, in placeholder order
    image_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in input_ids


class OmniGenProcessor:
    def __init__(self, tokenizer, max_image_size: int = 1024):
        self.tokenizer = tokenizer
        self.max_image_size = max_image_size

    def process_image(self, image: Image.Image) -> torch.Tensor:
        return image_to_tensor(crop_image(image.convert("RGB"), self.max_image_size))

    def encode(self, instruction: str, images: list[Image.Image] | None = None) -> EncodedPrompt:
        """Tokenise one instruction with its images (image k is `<|image_k|>`)."""
        images = list(images or [])
        tags = tag_numbers(instruction)
        check_tags(tags, len(images))
        text = wrap_prompt(instruction)
        if not images:
            return EncodedPrompt(list(self.tokenizer(text).input_ids))
        pixels = [self.process_image(im) for im in images]
        chunks = [list(self.tokenizer(chunk).input_ids) for chunk in TAG.split(text)]
        bos = 1  # OmniGen drops a leading id 1 from every chunk after an image tag
        chunks = [chunks[0]] + [c[1:] if c and c[0] == bos else c for c in chunks[1:]]
        ids: list[int] = []
        out = EncodedPrompt(ids)
        for i, chunk in enumerate(chunks):
            ids.extend(chunk)
            if i < len(tags):
                pv = pixels[tags[i] - 1]
                n = pv.shape[-2] * pv.shape[-1] // PIXELS_PER_TOKEN // PIXELS_PER_TOKEN
                out.image_spans.append((len(ids), len(ids) + n))
                out.pixel_values.append(pv)
                ids.extend([0] * n)
        return out

    def encode_image_only(self, images: list[Image.Image]) -> EncodedPrompt:
        """The image-CFG row: a prompt made only of the image tags."""
        return self.encode(" ".join(f"<img><|image_{k + 1}|></img>" for k in range(len(images))), images)
