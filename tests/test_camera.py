"""Camera conditioning: the 11-number vector (COLMAP round trips), `<cam>` token and CameraEncoder, adapter folder
save/load, the batch and loss path, generation with --camera / --camera-from / --orbit, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pycolmap
import pytest
import torch
from diffusers import OmniGenTransformer2DModel
from peft import PeftModel
from PIL import Image
from safetensors.torch import load_file

from data_builders.sfm import main as build_sfm
from omnideft.adapters import AdapterSpec, apply_adapter, load_adapter, save_adapter
from omnideft.adapters.apply import param_groups
from omnideft.adapters.fingerprint import base_fingerprint
from omnideft.camera.colmap import read_camera_records
from omnideft.camera.conditioning import CameraSpec, attach_camera, load_camera
from omnideft.camera.parse import parse_camera
from omnideft.camera.prompt import CameraPrompt, camera_text
from omnideft.camera.record import (
    LAYOUT,
    VECTOR_FIELDS,
    camera_centre,
    interpolate_vectors,
    quaternion_angle,
    record_vector,
    vector_to_colmap,
)
from omnideft.camera.token import CAM_TOKEN
from omnideft.cli import main as cli_main
from omnideft.data.loader import index_sources, sources_have_cameras
from omnideft.data.shards import Example
from omnideft.data.sources import resolve_sources
from omnideft.errors import UserError
from omnideft.families.omnigen.batch import BatchBuilder
from omnideft.families.omnigen.collate import collate_prompts
from omnideft.families.omnigen.model import load_omnigen, save_base
from omnideft.families.omnigen.model.tiny import tiny_transformer_config
from omnideft.families.omnigen.processor import OmniGenProcessor
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from omnideft.generate.validation import ValidationRenderer
from omnideft.model.tokenizer import build_tiny_tokenizer
from omnideft.shapes.shards import write_task_shards
from omnideft.train.recipe import ValidationSection
from tests.camera_scene import write_scene
from tests.helpers import assert_one_line_error, assert_stock_peft_loaded, run_cli

W, H = 64, 48
MODELS = {  # COLMAP model -> (params, expected f, cx, cy, k); f = mean(fx, fy): the pixel aspect is not kept
    "PINHOLE": ([40.0, 44.0, 31.0, 25.0], 42.0, 31.0, 25.0, 0.0),
    "SIMPLE_RADIAL": ([40.0, 32.0, 24.0, 0.02], 40.0, 32.0, 24.0, 0.02),
    "OPENCV": ([40.0, 42.0, 33.0, 23.0, 0.05, -0.01, 0.001, 0.002], 41.0, 33.0, 23.0, 0.05),
}


def write_model(folder, model: str, params, views: int = 5, seed: int = 3):
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=W, height=H, params=list(params),
                                                    camera_id=1))
    rng = np.random.default_rng(seed)
    for i in range(views):
        q = rng.normal(size=4)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(q / np.linalg.norm(q)), rng.normal(size=3) * 2)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"v{i}.jpg", camera_id=1, image_id=i + 1), pose)
    folder.mkdir(parents=True)
    rec.write_binary(str(folder))
    return folder


@pytest.mark.parametrize("model", sorted(MODELS))
def test_vector_round_trip_through_pycolmap_model(tmp_path, model):
    params, f, cx, cy, k = MODELS[model]
    sparse = write_model(tmp_path / "sparse", model, params)
    records = read_camera_records(sparse)
    rec = pycolmap.Reconstruction(str(sparse))
    images = {im.name: im for im in rec.images.values()}
    scales = {r["normalisation"]["scale"] for r in records.values()}
    assert len(records) == 5 and len(scales) == 1  # one scale per scene, stored with every record
    scale = scales.pop()
    for name, record in records.items():
        v = record_vector(record)
        assert len(v) == 11 and record["normalisation"]["layout"] == LAYOUT
        assert v[:4] == pytest.approx([f / W, cx / W, cy / H, k])
        back = vector_to_colmap(v, W, H, scale)
        assert back["model"] == "SIMPLE_RADIAL" and back["params"] == pytest.approx([f, cx, cy, k])
        pose = images[name].cam_from_world()
        x, y, z, w = pose.rotation.quat
        assert back["q_wxyz"][0] >= 0 and quaternion_angle(back["q_wxyz"], [w, x, y, z]) < 1e-6
        assert np.allclose(back["t"], pose.translation)
        assert np.allclose(camera_centre(back["q_wxyz"], back["t"]), images[name].projection_center())
        if model == "SIMPLE_RADIAL":  # nothing lost: the inverse camera projects exactly like the original
            cam = pycolmap.Camera(model="SIMPLE_RADIAL", width=W, height=H, params=back["params"])
            pts = np.array([[0.1, -0.2, 1.0], [0.3, 0.25, 2.0], [-0.4, 0.1, 1.5]])
            assert np.allclose(cam.img_from_cam(pts), rec.cameras[1].img_from_cam(pts))


def test_stored_vector_of_another_layout_is_recomputed():
    record = {"model": "PINHOLE", "params": [40.0, 40.0, 32.0, 24.0], "width": 64, "height": 48,
              "q_wxyz": [1.0, 0, 0, 0], "t": [0.0, 0, 2.0], "vector": [0.625, 0.83, 0.5, 0.5] + [9] * 7,
              "normalisation": {"layout": "fx/W fy/H cx/W cy/H qw qx qy qz tx/s ty/s tz/s", "scale": 2.0}}
    assert record_vector(record) == pytest.approx([0.625, 0.5, 0.5, 0.0, 1, 0, 0, 0, 0, 0, 1.0])


def test_parse_camera_forms_and_errors():
    pos = parse_camera("0.8,0.5,0.5,0.01,-1,0,0,0,0,0,2")
    assert pos == pytest.approx([0.8, 0.5, 0.5, 0.01, 1, 0, 0, 0, 0, 0, 2])  # -q made canonical (qw >= 0)
    named = parse_camera("f=0.8, cx=0.5, cy=0.5, qw=2, qx=0, qy=0, qz=0, tx=0, ty=0, tz=2")
    assert named == pytest.approx([0.8, 0.5, 0.5, 0.0, 1, 0, 0, 0, 0, 0, 2])  # k defaults to 0, q normalised
    for bad, needle in [("1,2,3", "has 3 numbers; expected 11"), ("0.8,0.5,0.5,0,1,0,0,0,0,0,nan", "not finite"),
                        ("0.8,0.5,0.5,0,1,0,0,0,0,0,inf", "not finite"), ("f=1,zoom=2", "unknown field 'zoom'"),
                        ("f=1,cx=0.5", "missing field(s) cy,qw"), ("0.8,0.5,0.5,0,0,0,0,0,0,0,2", "quaternion"),
                        ("f=1,0.5", "mixes named"), ("0.8,x,0.5,0,1,0,0,0,0,0,2", "cx='x' is not a number")]:
        with pytest.raises(UserError) as err:
            parse_camera(bad)
        assert needle in str(err.value) and "\n" not in str(err.value), (bad, str(err.value))


def test_orbit_interpolation_slerps_rotation_and_lerps_the_rest():
    a = [0.8, 0.5, 0.5, 0.0, 1, 0, 0, 0, 0, 0, 2]
    half = np.sqrt(0.5)
    b = [1.0, 0.5, 0.5, 0.1, half, 0, half, 0, 1, 0, 2]  # 90 degrees about y
    frames = interpolate_vectors(a, b, 5)
    assert len(frames) == 5 and frames[0] == pytest.approx(a) and frames[-1] == pytest.approx(b)
    mid = frames[2]
    assert quaternion_angle(mid[4:8], a[4:8]) == pytest.approx(np.pi / 4)  # half of the 90 degrees
    assert np.linalg.norm(mid[4:8]) == pytest.approx(1.0)
    assert mid[:4] == pytest.approx([0.9, 0.5, 0.5, 0.05]) and mid[8:] == pytest.approx([0.5, 0, 2])


def test_text_encoding_tokenises_every_number():
    tok = build_tiny_tokenizer()
    text = CameraPrompt("text", 2).instruction("a cube.", [0.8, 0.5, 0.5, 0.0, 0.92, -0.004, 0.38, 0, 0, 0, 1.07])
    assert text.endswith("Target camera: " + camera_text([0.8, 0.5, 0.5, 0.0, 0.92, -0.004, 0.38, 0, 0, 0, 1.07],
                                                          2) + ".")
    assert "qx 0.00" in text and "-0.00" not in text
    numbers = " ".join(text.split("camera:")[1].split()[1::2])
    ids = tok(numbers).input_ids[1:]
    assert 0 not in ids  # no <unk>: digits stand alone, as in Phi-3's tokenizer
    assert VECTOR_FIELDS[0] in text.split()


def fresh(seed: int = 0):
    return load_omnigen("tiny", seed=seed)  # camera tests mutate tokenizer and transformer: never the shared fixture


def forward(model, tokenizer, prompt: str, **extra):
    proc = OmniGenProcessor(tokenizer, max_image_size=32)
    batch = collate_prompts([proc.encode(prompt), proc.encode("a dog")], (32, 32))
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    return model(hidden_states=x, timestep=torch.tensor([0.3, 0.8]), input_ids=batch["input_ids"],
                 input_img_latents=[], input_image_sizes={}, attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"], return_dict=False, **extra)[0]


def test_zero_initialised_encoder_leaves_the_model_unchanged_and_trains():
    comps = fresh()
    spec = AdapterSpec(method="deft", rank=4)
    model = apply_adapter(comps.transformer, spec, targets=omnigen_targets)
    cond = attach_camera(comps.transformer, comps.tokenizer, CameraSpec(encoder_hidden=16))
    prompt = "a red cube. " + CAM_TOKEN
    assert cond.token_id in OmniGenProcessor(comps.tokenizer).encode(prompt).input_ids
    cams = torch.randn(2, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with_camera = forward(model, comps.tokenizer, prompt, camera=cams)
        cond.remove_hooks()  # the base: `<cam>` keeps its plain embedding row
        base = forward(model, comps.tokenizer, prompt)
        cond.install_hooks(comps.transformer)
    assert torch.equal(with_camera, base)
    # the encoder is a trainable submodule: the optimizer groups and the fingerprint see it correctly
    names = {n for n, p in model.named_parameters() if p.requires_grad and "camera_conditioning" in n}
    assert any("encoder.out.weight" in n for n in names) and any(n.endswith("token_embedding") for n in names)
    grouped = {id(p) for g in param_groups(model, spec, 1e-3) for p in g["params"]}
    assert all(id(p) in grouped for p in cond.parameters())
    assert base_fingerprint(model) == base_fingerprint(fresh().transformer)
    # one step moves the output layer; afterwards the camera changes the output
    forward(model, comps.tokenizer, prompt, camera=cams).pow(2).mean().backward()
    assert cond.encoder.out.weight.grad.abs().sum() > 0
    with torch.no_grad():
        cond.encoder.out.weight.sub_(0.1 * cond.encoder.out.weight.grad.sign())
        a = forward(model, comps.tokenizer, prompt, camera=cams)
        b = forward(model, comps.tokenizer, prompt, camera=cams.flip(0))
    assert not torch.allclose(a, b)


def test_encoder_takes_part_in_backward_without_any_cam_token():
    """DDP without find_unused_parameters needs every trainable parameter in each backward."""
    comps = fresh()
    model = apply_adapter(comps.transformer, AdapterSpec(method="lora", rank=2), targets=omnigen_targets)
    cond = attach_camera(comps.transformer, comps.tokenizer, CameraSpec(encoder_hidden=8))
    forward(model, comps.tokenizer, "a cube").sum().backward()  # no `<cam>`, no camera=
    assert all(p.grad is not None for p in cond.parameters())


def trained_camera_adapter(tmp_path, seed: int = 0, transformer=None):
    """Base (saved) + LoRA + camera encoder with non-zero weights, saved as an adapter folder."""
    comps = fresh(seed)
    if transformer is not None:
        comps.transformer = transformer
    save_base(comps, tmp_path / "base")
    model = apply_adapter(comps.transformer, AdapterSpec(method="lora", rank=2), targets=omnigen_targets)
    cond = attach_camera(comps.transformer, comps.tokenizer, CameraSpec(encoder_hidden=8))
    with torch.no_grad():
        for p in cond.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * 0.5)
    folder = save_adapter(model, tmp_path / "adapter", base_name=str(tmp_path / "base"))
    return comps, model, cond, folder


def test_save_and_reload_keep_token_id_row_and_outputs(tmp_path):
    comps, model, cond, folder = trained_camera_adapter(tmp_path)
    assert {"camera.json", "camera_encoder.safetensors", "adapter_model.safetensors"} <= {
        p.name for p in folder.iterdir()}
    cfg = json.loads((folder / "camera.json").read_text())
    assert cfg["token"] == CAM_TOKEN and cfg["token_id"] == cond.token_id and cfg["encoding"] == "learned"
    assert "token_embedding" in load_file(str(folder / "camera_encoder.safetensors"))
    prompt = "a cube. " + CAM_TOKEN
    cams = torch.randn(2, 11, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = forward(model, comps.tokenizer, prompt, camera=cams)

    again = load_omnigen(str(tmp_path / "base"))
    loaded = load_camera(again.transformer, again.tokenizer, folder)
    reloaded = load_adapter(again.transformer, folder)
    assert again.tokenizer.convert_tokens_to_ids(CAM_TOKEN) == cond.token_id == loaded.token_id
    assert torch.equal(again.transformer.embed_tokens.weight[cond.token_id], cond.token_embedding.detach())
    with torch.no_grad():
        assert torch.allclose(forward(reloaded, again.tokenizer, prompt, camera=cams), want, atol=1e-6)
    # stock PEFT ignores the extra files
    plain = load_omnigen(str(tmp_path / "base")).transformer
    assert_stock_peft_loaded(PeftModel.from_pretrained(plain, str(folder)), folder)


def test_full_embedding_table_grows_and_reloads(tmp_path):
    full = len(build_tiny_tokenizer())  # a table with no spare row: `<cam>` needs a new one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = OmniGenTransformer2DModel(**{**tiny_transformer_config(), "vocab_size": full})
    transformer.requires_grad_(False)
    comps, model, cond, folder = trained_camera_adapter(tmp_path, transformer=transformer)
    emb = comps.transformer.embed_tokens
    assert cond.token_id == full and emb.num_embeddings == 64 * (full // 64 + 1)
    assert comps.transformer.config.vocab_size == emb.num_embeddings
    again = load_omnigen(str(tmp_path / "base"))
    assert again.transformer.embed_tokens.num_embeddings == full
    load_camera(again.transformer, again.tokenizer, folder)  # grows first, so the fingerprint matches
    load_adapter(again.transformer, folder)
    assert torch.equal(again.transformer.embed_tokens.weight[cond.token_id], cond.token_embedding.detach())


def test_batch_carries_cam_token_and_camera_tensor():
    comps = fresh()
    cond = attach_camera(comps.transformer, comps.tokenizer, CameraSpec(encoder_hidden=8))
    img = Image.new("RGB", (32, 32), "red")
    record = {"model": "SIMPLE_PINHOLE", "params": [40.0, 16.0, 16.0], "width": 32, "height": 32,
              "q_wxyz": [1.0, 0, 0, 0], "t": [0.0, 0, 4.0], "normalisation": {"scale": 2.0}}
    exs = [Example("a", "sfm/novel_view", "a cube.", [], img, camera=record),
           Example("b", "demo/shapes", "a dog.", [], img)]
    builder = BatchBuilder(OmniGenProcessor(comps.tokenizer, max_image_size=32), 0.0, seed=0, camera=cond.prompt)
    batch = builder(exs)
    assert batch["camera"].shape == (2, 11)
    assert batch["camera"][0].tolist() == pytest.approx([1.25, 0.5, 0.5, 0, 1, 0, 0, 0, 0, 0, 2.0])
    assert batch["camera"][1].abs().sum() == 0
    has_cam = (batch["input_ids"] == cond.token_id).sum(dim=1).tolist()
    assert has_cam == [1, 0]
    text = BatchBuilder(OmniGenProcessor(comps.tokenizer, max_image_size=32), 0.0, seed=0,
                        camera=CameraPrompt("text", 1))(exs)
    assert "camera" not in text and (text["input_ids"] == cond.token_id).sum() == 0


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory):
    """A saved base + camera adapter and a COLMAP scene, for the generate command."""
    root = tmp_path_factory.mktemp("camgen")
    trained_camera_adapter(root)
    write_scene(root / "scene", [0.0, 40.0, 80.0], size=32, focal=36.0)
    return root


def test_generate_with_camera_numbers_and_named_view(camera_run, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert cli_main(["generate", "--adapter", str(camera_run / "adapter"), "--prompt", "a cube", "--out", str(out),
                     "--steps", "2", "--height", "32", "--width", "32", "--seed", "1",
                     "--camera", "0.9,0.5,0.5,0,1,0,0,0,0,0,2"]) == 0
    assert Image.open(out).size == (32, 32)
    a = np.asarray(Image.open(out))
    view = tmp_path / "view.png"
    assert cli_main(["generate", "--adapter", str(camera_run / "adapter"), "--prompt", "a cube", "--out", str(view),
                     "--steps", "2", "--height", "32", "--width", "32", "--seed", "1", "--camera-from",
                     str(camera_run / "scene" / "sparse"), "--view", "view_001.png"]) == 0
    assert not np.array_equal(a, np.asarray(Image.open(view)))  # another camera, another image
    assert "image: " in capsys.readouterr().out


def test_generate_orbit_writes_gif_strip_and_frames(camera_run, tmp_path):
    out = tmp_path / "orbit" / "spin.gif"
    proc = run_cli("generate", "--adapter", str(camera_run / "adapter"), "--prompt", "a cube", "--out", str(out),
                   "--steps", "2", "--height", "32", "--width", "32", "--camera-from",
                   str(camera_run / "scene" / "sparse"), "--orbit", "view_000.png", "view_002.png", "--frames", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    gif = Image.open(out)
    assert gif.n_frames >= 2 and gif.size == (32, 32)  # PIL drops identical consecutive frames from a GIF
    assert Image.open(tmp_path / "orbit" / "spin_strip.png").size == (4 * 32, 32)
    frames = sorted((tmp_path / "orbit" / "spin_frames").glob("frame_*.png"))
    assert len(frames) == 4
    assert not np.array_equal(np.asarray(Image.open(frames[0])), np.asarray(Image.open(frames[-1])))
    assert "gif: " in proc.stdout and "strip: " in proc.stdout


def test_bad_camera_input_is_one_line_exit_2(camera_run, tmp_path, capsys):
    proc = run_cli("generate", "--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "o.png"),
                   "--camera", "1,2,3")
    assert_one_line_error(proc, "--camera", "has 3 numbers; expected 11")
    sparse = str(camera_run / "scene" / "sparse")
    equirect = write_model(tmp_path / "pano", "EQUIRECTANGULAR", [64.0, 48.0])
    cases = [
        (["--camera", "0.8,0.5,0.5,0,1,0,0,0,0,0,nan"], "not finite"),
        (["--camera-from", sparse, "--view", "nope.png"], "view 'nope.png' is not a registered image"),
        (["--camera-from", sparse, "--orbit", "view_000.png", "gone.png"], "view 'gone.png'"),
        (["--camera-from", str(equirect), "--view", "v0.jpg"], "camera 1 uses EQUIRECTANGULAR"),
        (["--camera-from", str(tmp_path), "--view", "v0.jpg"], "expected a COLMAP sparse model"),
        (["--camera-from", sparse], "exactly one of --view"),
        (["--view", "view_000.png"], "--view needs --camera-from"),
        (["--camera-from", sparse, "--orbit", "view_000.png", "view_001.png", "--frames", "1"], "--frames 1"),
        (["--camera", "0.8,0.5,0.5,0,1,0,0,0,0,0,2", "--camera-encoding", "learned"], "needs an adapter trained"),
    ]
    for extra, needle in cases:  # in-process: the same main() as the subprocess above, without its start-up cost
        code = cli_main(["generate", "--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "o.png"), *extra])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (extra, err)
    assert not (tmp_path / "o.png").exists()


def test_auto_encoding_follows_the_shards(camera_run, tmp_path):
    scene = camera_run / "scene"
    assert build_sfm(["--src", str(scene / "sparse"), "--images", str(scene / "images"), "--out",
                      str(tmp_path / "sfm"), "--resolution", "32", "--context-views", "1", "--no-progress"]) == 0
    shapes = write_task_shards(tmp_path / "shapes", ["fill"], n_samples=2, size=32, n_examples=1)
    assert sources_have_cameras(index_sources(resolve_sources([str(tmp_path / "sfm")])))
    assert not sources_have_cameras(index_sources(resolve_sources([str(shapes)])))


def test_validation_prompt_with_camera(camera_run, tmp_path):
    with pytest.raises(UserError, match=r"validation.prompts\[0\].camera .* has 2 numbers"):
        ValidationRenderer(ValidationSection(prompts=[{"prompt": "a cube", "camera": "1,2"}]), 32)
    comps = load_omnigen(str(camera_run / "base"))
    load_camera(comps.transformer, comps.tokenizer, camera_run / "adapter")
    model = load_adapter(comps.transformer, camera_run / "adapter")
    renderer = ValidationRenderer(ValidationSection(steps=2, prompts=[
        {"prompt": "a cube", "camera": "0.9,0.5,0.5,0,1,0,0,0,0,0,2"},
        {"prompt": "a cube", "camera": "0.9,0.5,0.5,0,0,1,0,0,0,0,2"}]), 32)
    renderer(model, comps, 1, tmp_path)
    a, b = (np.asarray(Image.open(tmp_path / "validation" / "step-0000001" / f"0{i}.png")) for i in (0, 1))
    assert not np.array_equal(a, b)  # the two cameras reach the model
