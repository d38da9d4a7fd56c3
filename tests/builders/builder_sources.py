"""Tiny sources in the real formats, written with the formats' own writers (datasets, pycolmap, XML, JSONL).

A module of its own (not conftest.py) so `from builder_sources import ...` never collides with tests/conftest.py.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

CELL = 32
GRAPH_ROWS = 10
CORRUPT_ROW = 3  # its target is junk bytes: counted as corrupt when it is a query


def noise_image(seed: int, size=(CELL, CELL), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def mask_image(seed: int) -> Image.Image:
    arr = np.zeros((CELL, CELL), np.uint8)
    arr[8 + seed % 4: 24, 6:26] = 255
    return Image.fromarray(arr, "L")


def graph200k_columns() -> dict:
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    image_cols = ["ref", "target", "canny", "depth", "hed", "normal", "mlsd", "openpose", "sam2_mask", "uniformer",
                  "foreground", "qwen_2_5_mask", "qwen_2_5_bounding_box", "DepthEdit"]
    image_cols += [f"{s}_{kind}_{k}" for s in ("InstantStyle", "ReduxStyle") for kind in ("image", "ref")
                   for k in range(3)]
    image_cols += [f"FillEdit_image_{k}" for k in range(2)]
    feats = {c: ImageFeature() for c in image_cols}
    feats["description"] = {"item": Value("string"), "description_0": Value("string")}
    feats["quality_assessment"] = {"objectConsistency": Value("int32")}
    feats["collection"] = Value("string")
    return Features(feats), image_cols


def graph200k_rows(n: int = GRAPH_ROWS) -> dict:
    features, image_cols = graph200k_columns()
    data: dict[str, list] = {c: [] for c in features}
    for r in range(n):
        for j, c in enumerate(image_cols):
            img = mask_image(r) if c == "foreground" else noise_image(1000 * r + j)
            data[c].append(img)
        data["description"].append({"item": f"item{r}", "description_0": f"a thing number {r}"})
        data["quality_assessment"].append({"objectConsistency": 5})
        data["collection"].append("test")
    data["target"][CORRUPT_ROW] = {"bytes": b"this is not a jpeg", "path": None}
    data["DepthEdit"][1] = None  # a missing cell: tasks needing it fall back to another row
    return data


@pytest.fixture(scope="session")
def graph200k_dir(tmp_path_factory) -> Path:
    from datasets import Dataset, DatasetDict

    features, _ = graph200k_columns()
    root = tmp_path_factory.mktemp("graph200k") / "Graph200K"
    train = Dataset.from_dict(graph200k_rows(), features=features)
    test = Dataset.from_dict(graph200k_rows(4), features=features)
    DatasetDict({"train": train, "test": test}).save_to_disk(str(root))
    return root


@pytest.fixture(scope="session")
def visualcloze_tree(tmp_path_factory) -> Path:
    """VisualCloze processing.py output: <dir>/train/<cond>/<i>_<cond>.jpg and train/data.json (absolute paths)."""
    root = tmp_path_factory.mktemp("vctree")
    split = root / "train"
    entries = []
    for i in range(4):
        cond = {}
        for j, name in enumerate(["reference", "target", "canny", "depth", "mask", "foreground"]):
            folder = split / name
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i}_{name}.jpg"
            (mask_image(i) if name == "foreground" else noise_image(50 * i + j)).save(path)
            cond[name] = str(path)
        cond["InstantStyle"] = {"image_path": [], "style_path": []}
        entries.append({"condition": cond, "quality_assessment": {"objectConsistency": 4},
                        "description": {"item": "cup", "description_0": "a red cup"}, "collection": "x"})
    (split / "data.json").write_text(json.dumps(entries))
    return root


def read_samples(split_dir: Path) -> list[dict]:
    """Read shards back with plain webdataset (no decoding): one dict per sample, json parsed."""
    import webdataset as wds

    shards = sorted(str(p) for p in split_dir.glob("*.tar"))
    samples = []
    for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        s = dict(s)
        s["meta"] = json.loads(s["json"])
        samples.append(s)
    return samples


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def shard_bytes(split_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(split_dir.glob("*.tar"))}


def member_names(shard: Path) -> list[str]:
    with tarfile.open(shard) as tar:
        return [m.name for m in tar]


SFM_VIEWS = 6
SFM_MISSING = "view_5.jpg"  # registered in the model but absent on disk: skipped as missing


def write_colmap(root: Path, model: str = "SIMPLE_RADIAL", params=(40.0, 32.0, 24.0, 0.02)) -> None:
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=64, height=48, params=list(params),
                                                    camera_id=1))
    rng = np.random.default_rng(7)
    for i in range(SFM_VIEWS):
        q = rng.normal(size=4)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(q / np.linalg.norm(q)), rng.normal(size=3) * 3)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"view_{i}.jpg", camera_id=1, image_id=i + 1), pose)
    for kind in ("txt", "bin"):
        (root / kind).mkdir(parents=True)  # pycolmap's writers need the folder to exist
    rec.write_text(str(root / "txt"))
    rec.write_binary(str(root / "bin"))


@pytest.fixture(scope="session")
def colmap_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colmap")
    write_colmap(root / "sparse")
    (root / "images").mkdir()
    for i in range(SFM_VIEWS):
        if f"view_{i}.jpg" != SFM_MISSING:
            noise_image(300 + i, size=(64, 48)).save(root / "images" / f"view_{i}.jpg", quality=95)
    return root


@pytest.fixture(scope="session")
def jsonl_source(tmp_path_factory) -> Path:
    """OmniGen toy-style JSONL plus one line/image per skip reason."""
    root = tmp_path_factory.mktemp("jsonl")
    img = root / "images"
    img.mkdir()
    for name, seed in [("a.jpg", 1), ("b.png", 2), ("c.jpg", 3), ("d.jpg", 4), ("e.jpg", 5)]:
        noise_image(seed).save(img / name)
    noise_image(6, size=(80, 80)).save(img / "huge.png")
    (img / "empty.jpg").write_bytes(b"")
    (img / "corrupt.jpg").write_bytes(b"\x00not an image at all")
    full = io.BytesIO()
    noise_image(7).save(full, format="JPEG")
    (img / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(img / "float.tif")  # 16-bit images convert; float not
    t = "<img><|image_{}|></img>"
    lines = [
        {"task_type": "text_to_iamge", "instruction": "a red cup", "input_images": [], "output_image": "a.jpg"},
        {"task_type": "image_edit", "instruction": f"make {t.format(1)} blue", "input_images": ["a.jpg"],
         "output_image": "b.png"},
        {"task_type": "try-on", "instruction": f"{t.format(1)} wears {t.format(2)}",
         "input_images": ["c.jpg", "d.jpg"], "output_images": ["e.jpg", "a.jpg"]},
        {"task_type": "segementation", "instruction": f"segment {t.format(1)}", "input_images": ["a.jpg"],
         "output_images": "b.png"},
        {"instruction": "missing file", "input_images": [], "output_image": "nope.jpg"},
        {"instruction": "empty", "input_images": [], "output_image": "empty.jpg"},
        {"instruction": "corrupt", "input_images": [], "output_image": "corrupt.jpg"},
        {"instruction": "truncated", "input_images": [], "output_image": "truncated.jpg"},
        {"instruction": "float", "input_images": [], "output_image": "float.tif"},
        {"instruction": "too big", "input_images": [], "output_image": "huge.png"},
        {"instruction": f"two tags {t.format(1)} {t.format(2)}", "input_images": ["a.jpg"], "output_image": "b.png"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nthis line is not json\n"
    (root / "toy.jsonl").write_text(text)
    return root


DREAMBOOTH_PROMPTS = """Classes
subject_name,class
dog6,dog
backpack,backpack

Prompts
Object Prompts
prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} on the beach'.format(unique_token, class_token),
]

Live Subject Prompts
prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
'a {0} {1} sleeping'.format(unique_token, class_token),
]
"""


@pytest.fixture(scope="session")
def dreambooth_root(tmp_path_factory) -> Path:
    """DreamBooth's dataset layout: <root>/<subject>/*.jpg and <root>/prompts_and_classes.txt."""
    root = tmp_path_factory.mktemp("dreambooth") / "dataset"
    for subject, n in (("dog6", 4), ("backpack", 2)):
        (root / subject).mkdir(parents=True)
        for i in range(n):
            noise_image(700 + i, size=(48, 40)).save(root / subject / f"{i:02d}.jpg")
    (root / "dog6" / "03.jpg").write_bytes(b"")  # zero-size
    (root / "prompts_and_classes.txt").write_text(DREAMBOOTH_PROMPTS)
    classes = root.parent / "class_dog"
    classes.mkdir()
    for i in range(2):
        noise_image(800 + i).save(classes / f"c{i}.png")
    return root


def voc_xml(filename: str, size: tuple[int, int], boxes: list[tuple[str, int, int, int, int]]) -> bytes:
    """A labelImg-style PascalVOC annotation written with ElementTree."""
    import xml.etree.ElementTree as ET

    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "scene"
    ET.SubElement(root, "filename").text = filename
    s = ET.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(s, tag).text = str(value)
    for name, x0, y0, x1, y1 in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        bb = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(bb, tag).text = str(value)
    return ET.tostring(root)


@pytest.fixture(scope="session")
def insdet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("insdet") / "InsDet-mini"
    for obj, n in (("000_aveda_shampoo", 4), ("001_binder_clips", 3)):
        (root / "Objects" / obj / "images").mkdir(parents=True)
        (root / "Objects" / obj / "masks").mkdir()
        for i in range(n):
            noise_image(900 + 10 * len(obj) + i).save(root / "Objects" / obj / "images" / f"{i + 1:03d}.jpg")
            mask_image(i).save(root / "Objects" / obj / "masks" / f"{i + 1:03d}.png")
    scene = root / "Scenes" / "easy" / "leisure_zone"
    scene.mkdir(parents=True)
    noise_image(950, size=(64, 48)).save(scene / "rgb_000.jpg")
    (scene / "rgb_000.xml").write_bytes(voc_xml("rgb_000.jpg", (64, 48), [
        ("000_aveda_shampoo", 4, 4, 20, 30), ("001_binder_clips", 30, 10, 60, 40)]))
    noise_image(951, size=(64, 48)).save(scene / "rgb_001.jpg")
    (scene / "rgb_001.xml").write_text("<annotation><size>broken")
    hard = root / "Scenes" / "hard" / "office_001"
    hard.mkdir(parents=True)
    noise_image(952, size=(64, 48)).save(hard / "rgb_000.jpg")
    (hard / "rgb_000.xml").write_bytes(voc_xml("rgb_000.jpg", (64, 48), [("001_binder_clips", 0, 0, 32, 24)]))
    (root / "Background").mkdir()
    for i in range(2):
        noise_image(960 + i, size=(48, 64)).save(root / "Background" / f"{i:03d}.jpg")
    return root


class FakeOpenAI:
    """A local OpenAI-compatible chat server on 127.0.0.1 that answers with a fixed caption.

    Bounded: it serves from a daemon thread and shuts itself down after `lifetime_s` even if the test forgets.
    """

    def __init__(self, api_key: str, lifetime_s: float = 120):
        import http.server
        import threading

        self.requests: list[dict] = []
        self.auth: list[str] = []
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server_self.requests.append(body)
                server_self.auth.append(self.headers.get("Authorization", ""))
                ok = self.path == "/v1/chat/completions" and self.headers.get("Authorization") == f"Bearer {api_key}"
                reply = {"choices": [{"message": {"role": "assistant",
                                                  "content": f"a shiny test object {len(server_self.requests)}"}}]}
                data = json.dumps(reply if ok else {"error": "bad request"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(lifetime_s, self.stop)
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        self.timer.cancel()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai():
    server = FakeOpenAI(api_key="test-secret-key-123")
    yield server
    server.stop()
