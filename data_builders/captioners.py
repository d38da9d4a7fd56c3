"""Caption backends with an on-disk cache keyed by image content hash (a rerun never captions twice).

Backends: `none` (templates from names), `openai` (any OpenAI-compatible chat server, e.g. vLLM serving Qwen-VL;
the API key comes from an environment variable only), `blip2` and `qwen-vl` (transformers, hub id or local dir).
Every caption says where it came from (`Caption.source`): the model, or the builder's template when the model gave
no text. Only the model's text is cached, so a later run with a working model captions what an empty one missed;
the builders count both in the manifest (`captions`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from omnideft.data.format.writer import write_json_atomic
from omnideft.errors import UserError

from .images import SkipSample

DEFAULT_PROMPT = "Describe this image in detail. Keep it concise."  # the DEFT authors' Qwen2.5-VL prompt
DEFAULT_MODELS = {"blip2": "Salesforce/blip2-opt-2.7b", "qwen-vl": "Qwen/Qwen2.5-VL-7B-Instruct"}
HTTP_TIMEOUT_S = 120
HTTP_RETRIES = 3
MODEL, TEMPLATE = "model", "template"  # Caption.source


@dataclass(frozen=True)
class Caption:
    text: str
    source: str  # MODEL: the captioner's text (now or from its cache); TEMPLATE: the builder's fallback


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CaptionCache:
    """One JSON file per (backend, model, prompt, image hash); atomic writes so worker processes can share it."""

    def __init__(self, root: Path, backend_id: str):
        self.dir = Path(root) / hashlib.sha256(backend_id.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "backend.txt").write_text(backend_id + "\n")

    def path(self, image_hash: str) -> Path:
        return self.dir / image_hash[:2] / f"{image_hash}.json"

    def get(self, image_hash: str, fallback: str) -> str | None:
        """The model's cached caption, or None. An entry equal to the template is not the model's (earlier versions
        cached the template when the model gave no text): it is asked again."""
        p = self.path(image_hash)
        if not p.is_file():
            return None
        text = json.loads(p.read_text())["caption"].strip()
        return text if text and text != fallback.strip() else None

    def put(self, image_hash: str, caption: str) -> None:
        write_json_atomic(self.path(image_hash), {"caption": caption})


class Captioner:
    """Base: `describe(image)` is the backend; `caption()` adds the cache and the template fallback."""

    backend_id = "none"

    def __init__(self, cache: CaptionCache | None = None):
        self.cache = cache

    def caption(self, image: Image.Image, image_bytes: bytes, fallback: str) -> Caption:
        key = content_hash(image_bytes) if self.cache is not None else None
        cached = self.cache.get(key, fallback) if key else None
        if cached is not None:
            return Caption(cached, MODEL)
        text = (self.describe(image) or "").strip()
        if not text:  # never cached: a later run (a working model) asks again
            return Caption(fallback, TEMPLATE)
        if key:
            self.cache.put(key, text)
        return Caption(text, MODEL)

    def describe(self, image: Image.Image) -> str | None:
        return None


class TemplateCaptioner(Captioner):
    """`--captioner none`: the builder's template (e.g. 'a photo of aveda shampoo'); nothing is cached."""

    def caption(self, image: Image.Image, image_bytes: bytes, fallback: str) -> Caption:
        return Caption(fallback, TEMPLATE)


def jpeg_data_url(image: Image.Image, max_side: int = 1024) -> str:
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAICaptioner(Captioner):
    """POST {endpoint}/chat/completions with the image as a data URL (OpenAI vision message format)."""

    def __init__(self, endpoint: str, model: str, api_key: str | None, prompt: str, cache: CaptionCache | None):
        super().__init__(cache)
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model, self.prompt = model, prompt
        self._api_key = api_key  # never logged, never written: only sent in the Authorization header

    def describe(self, image: Image.Image) -> str:
        body = {"model": self.model, "temperature": 0, "max_tokens": 160, "messages": [{"role": "user", "content": [
            {"type": "text", "text": self.prompt},
            {"type": "image_url", "image_url": {"url": jpeg_data_url(image)}}]}]}
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        for attempt in range(HTTP_RETRIES):
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                    reply = json.loads(response.read())
                return str(reply["choices"][0]["message"]["content"]).strip()
            except (urllib.error.URLError, TimeoutError, KeyError, IndexError, ValueError) as exc:
                if attempt == HTTP_RETRIES - 1:
                    raise SkipSample("caption_failed", f"{self.url}: {type(exc).__name__}") from None
                time.sleep(2 ** attempt)
        raise AssertionError("unreachable")


class TransformersCaptioner(Captioner):
    """BLIP-2 or Qwen-VL through transformers; the model loads lazily, once per worker process."""

    def __init__(self, kind: str, model: str, prompt: str, cache: CaptionCache | None, device: str = "cpu"):
        super().__init__(cache)
        self.kind, self.model_id, self.prompt, self.device = kind, model, prompt, device
        self._model = self._processor = None

    def _load(self) -> None:
        import transformers  # builders stay torch-free: only the model captioners load transformers and torch

        if self.kind == "blip2":
            self._processor = transformers.Blip2Processor.from_pretrained(self.model_id)
            self._model = transformers.Blip2ForConditionalGeneration.from_pretrained(self.model_id)
        else:
            self._processor = transformers.AutoProcessor.from_pretrained(self.model_id)
            self._model = transformers.AutoModelForImageTextToText.from_pretrained(self.model_id)
        self._model.to(self.device).eval()

    def describe(self, image: Image.Image) -> str:
        import torch  # see _load

        if self._model is None:
            self._load()
        if self.kind == "blip2":
            inputs = self._processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        else:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self._processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = self._processor(text=[text], images=[image.convert("RGB")], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self._model.generate(**inputs, max_new_tokens=80, do_sample=False)
        if self.kind != "blip2":
            out = out[:, inputs["input_ids"].shape[1]:]
        return self._processor.batch_decode(out, skip_special_tokens=True)[0].strip()


def add_captioner_args(parser) -> None:
    g = parser.add_argument_group("captions")
    g.add_argument("--captioner", choices=("none", "blip2", "qwen-vl", "openai"), default="none",
                   help="caption backend (none: templates from names)")
    g.add_argument("--model", default=None, help="captioner model: hub id or local dir (transformers), or the "
                                                 "served model name (openai)")
    g.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the endpoint's API key (the key is never logged or stored)")
    g.add_argument("--caption-prompt", default=DEFAULT_PROMPT, help="instruction sent with each image")
    g.add_argument("--caption-cache", default=None, help="cache folder (default: OUT/caption-cache)")
    g.add_argument("--caption-device", default="cpu", help="torch device for blip2/qwen-vl")


def check_captioner_args(args) -> None:
    if args.captioner == "openai" and not (args.endpoint and args.model):
        raise UserError("--captioner openai needs --endpoint URL and --model NAME")


def make_captioner(args) -> Captioner:
    """Built inside each worker process (transformers models must not be forked half-loaded)."""
    if args.captioner == "none":
        return TemplateCaptioner()
    model = args.model or DEFAULT_MODELS.get(args.captioner, "")
    backend_id = f"{args.captioner}|{model}|{args.caption_prompt}"
    cache = CaptionCache(Path(args.caption_cache or Path(args.out) / "caption-cache"), backend_id)
    if args.captioner == "openai":
        return OpenAICaptioner(args.endpoint, model, os.environ.get(args.api_key_env), args.caption_prompt, cache)
    return TransformersCaptioner(args.captioner, model, args.caption_prompt, cache, args.caption_device)
