"""Generation and export on the tiny OmniGen2 through the public entry points: the `Generator` API and `omnideft
generate` dispatch on the family (folder, adapter or --family), adapters loaded as is, merged or composed,
in-context examples and reference images, both schedulers and the guidance step range; `omnideft export` on
OmniGen2 bases; the one-line errors of bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.errors import UserError
from omnideft.families.generator import FamilyGenerator as Generator
from omnideft.families.generator import family_for
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from omnideft.families.omnigen2.generator import OmniGen2Generator
from omnideft.families.omnigen2.sampler import OmniGen2Sampler
from omnideft.families.omnigen2.targets import target_modules as omnigen2_targets
from omnideft.model import load_omnigen
from omnideft.model.omnigen2.folder import load_omnigen2, save_omnigen2
from tests.helpers import assert_one_line_error, run_cli, run_cli_here

SMALL = dict(height=32, width=32, steps=2, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny OmniGen2 base folder, two DEFT adapters on it (non-zero deltas), a v1 adapter, three images."""
    tmp = tmp_path_factory.mktemp("og2gen")
    base = save_omnigen2(load_omnigen2("tiny", seed=0), tmp / "base")
    adapters = []
    for i in range(2):
        torch.manual_seed(10 + i)
        model = apply_adapter(load_omnigen2(str(base)).transformer, AdapterSpec(method="deft", rank=4, init="paper"),
                              targets=omnigen2_targets)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "deft_R" in name:
                    p.add_(torch.randn_like(p) * 0.5)
        adapters.append(save_adapter(model, tmp / f"adapter{i}", base_name=str(base), family="omnigen2"))
    v1 = save_adapter(apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(method="lora", rank=2),
                                    targets=omnigen_targets),
                      tmp / "v1-adapter", base_name="tiny")
    images = []
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        images.append(tmp / f"im{i}.png")
        Image.new("RGB", (32, 32), colour).save(images[-1])
    return {"tmp": tmp, "base": base, "adapters": adapters, "v1": v1, "images": images}


def _pixels(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).float()


def test_generator_api_dispatches_and_applies_adapters(world):
    base, (a, b) = str(world["base"]), world["adapters"]
    assert family_for("tiny", [a])[0].name == "omnigen2"  # a preset takes the adapter's recorded family
    assert family_for("tiny")[0].name == "omnigen" and family_for("tiny", (), "omnigen2")[0].name == "omnigen2"
    g = Generator.from_pretrained(adapters=[a])  # the base comes from the adapter; its folder says OmniGen2
    assert isinstance(g, OmniGen2Generator) and g.model_name == base
    adapted = g("a red square", **SMALL)[0]
    # the same image as the sampler on the adapted transformer; not the base's
    sampler = OmniGen2Sampler.from_components(g.components)
    assert _pixels(adapted).equal(_pixels(sampler("a red square", text_guidance=5.0, image_guidance=2.0, **SMALL)))
    g.set_adapters([])
    plain = g("a red square", **SMALL)[0]
    assert _pixels(plain).equal(_pixels(OmniGen2Sampler.from_components(load_omnigen2(base))(
        "a red square", text_guidance=5.0, image_guidance=2.0, **SMALL)))
    assert (_pixels(plain) - _pixels(adapted)).abs().max() > 10
    # merged at weight 1 (with a second adapter at weight 0) = loaded as is, to 8-bit rounding
    g.set_adapters([(a, 1.0), (b, 0.0)])
    assert (_pixels(g("a red square", **SMALL)[0]) - _pixels(adapted)).abs().max() <= 1
    g.set_adapters([f"{a}:0.5", f"{b}:0.5"])  # composed
    composed = g("a red square", **SMALL)[0]
    assert (_pixels(composed) - _pixels(adapted)).abs().max() > 1
    # image k of n is the image of seed + k alone
    two = g("a red square", n=2, **{**SMALL, "seed": 0})
    assert _pixels(two[1]).equal(_pixels(g("a red square", **{**SMALL, "seed": 1})[0]))


def test_in_context_references_schedulers_and_guidance_range(world):
    g = Generator.from_pretrained("tiny", family="omnigen2")
    im0, im1, im2 = (Image.open(p) for p in world["images"])
    settings = dict(examples=[(im0, im1)], guidance=4.0, image_guidance=2.0, **SMALL)
    euler = g("make <img><|image_1|></img> blue", [im2], **settings)[0]
    ranged = g("make <img><|image_1|></img> blue", [im2], cfg_range=(0.0, 0.4), **settings)[0]
    # DPM-Solver++ takes first-order steps first and last, where it equals Euler in exact arithmetic: with 2 steps
    # the two differ only by float rounding (0 levels on one CPU, 1 on another); 8 steps differ by several levels.
    long = {**settings, "steps": 8}
    euler8 = g("make <img><|image_1|></img> blue", [im2], **long)[0]
    dpm8 = g("make <img><|image_1|></img> blue", [im2], scheduler="dpmsolver++", **long)[0]
    assert euler.size == dpm8.size == ranged.size == (32, 32)
    assert (_pixels(euler8) - _pixels(dpm8)).abs().max() > 2 and (_pixels(euler) - _pixels(ranged)).abs().max() > 2
    # the example pair and the query become references 1-3 in OmniGen2's wording
    sampler = OmniGen2Sampler.from_components(g.components)
    worded = "example 1: the first image becomes the second image. make the third image blue"
    assert _pixels(euler).equal(_pixels(sampler(worded, [im0, im1, im2], text_guidance=4.0, image_guidance=2.0,
                                                align_to_reference=False, **SMALL)))
    with pytest.raises(UserError, match="6 reference images \\(2 query \\+ 2 example pairs x 2\\); OmniGen2 takes"):
        g("x", [im0, im1], examples=[(im0, im1), (im1, im2)], **SMALL)
    with pytest.raises(UserError, match="guidance step range 0.6 0.2"):
        g("x", cfg_range=(0.6, 0.2), **SMALL)


def test_cli_generate_on_an_omnigen2_base(world, tmp_path):
    im0, im1, im2 = map(str, world["images"])
    out = tmp_path / "out.png"
    proc = run_cli_here("generate", "--adapter", f"{world['adapters'][0]}:0.7", "--prompt", "make it blue",
                        "--image", im2, "--example", f"{im0}={im1}", "--steps", "2", "--height", "32", "--width",
                        "32", "--scheduler", "dpmsolver++", "--cfg-range", "0", "0.5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(out).size == (32, 32) and (tmp_path / "out_sheet.png").is_file()
    proc = run_cli_here("generate", "--model", "tiny", "--family", "omnigen2", "--prompt", "a cat", "--steps", "1",
                   "--height", "32", "--width", "48", "--out", str(tmp_path / "t.png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(tmp_path / "t.png").size == (48, 32)


def test_cli_bad_input_is_one_line(world, tmp_path):
    im = str(world["images"][0])
    six = ["--image", im] * 4 + ["--example", f"{im}={im}"]
    assert_one_line_error(run_cli_here("generate", "--model", "tiny", "--family", "omnigen2", "--prompt", "x", *six,
                                  "--out", str(tmp_path / "a.png")), "6 reference images", "at most 5")
    assert_one_line_error(run_cli_here("generate", "--model", str(world["base"]), "--adapter", str(world["v1"]),
                                  "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "b.png")),
                          "trained on OmniGen (v1)", "this base is OmniGen2")
    # the rest in process (the same UserError the CLI prints as one line)
    from omnideft.generate.run import GenerateRequest, run_generate

    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    for needle, settings in [("not a model folder of any family", dict(model=str(other))),
                             ("--scheduler: an OmniGen2 setting; this base is OmniGen \\(v1\\)",
                              dict(model="tiny", scheduler="dpmsolver++")),
                             ("is an OmniGen2 folder, but the family asked for is OmniGen \\(v1\\)",
                              dict(model=str(world["base"]), family="omnigen")),
                             ("--camera: OmniGen2 has no camera conditioning",
                              dict(model=str(world["base"]), camera="1,0.5,0.5,0,1,0,0,0,0,0,0"))]:
        with pytest.raises(UserError, match=needle):
            run_generate(GenerateRequest(prompt="x", out=str(tmp_path / "c.png"), **settings))
    assert not any(tmp_path.glob("*.png"))


def test_cli_export_loads_omnigen2_bases(world, tmp_path):
    adapter = world["adapters"][0]
    proc = run_cli_here("export", str(adapter), "--format", "comfyui", "--out", str(tmp_path / "comfy"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    tensors = load_file(tmp_path / "comfy" / "omnigen2_lora_comfyui.safetensors")
    assert "layers.0.attn.to_q.lora_A.weight" in tensors
    proc = run_cli_here("export", str(adapter), "--format", "merged", "--out", str(tmp_path / "merged"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OmniGen2 published layout" in proc.stdout
    index = json.loads((tmp_path / "merged" / "model_index.json").read_text())
    assert index["_class_name"] == "OmniGen2Pipeline"
    merged = OmniGen2Generator.from_pretrained(str(tmp_path / "merged"))
    loaded = OmniGen2Generator.from_pretrained(adapters=[adapter])
    a, b = merged("a red square", **SMALL)[0], loaded("a red square", **SMALL)[0]
    assert (_pixels(a) - _pixels(b)).abs().max() <= 1


def test_cli_demo_on_the_tiny_omnigen2(tmp_path):
    proc = run_cli("demo", "--family", "omnigen2", "--steps", "16", "--samples", "4", "--no-progress", "--out",
                   str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo (tiny OmniGen2)" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["steps"] == 16 and len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 16
    # the adapter fits its training samples: at the same noise and t the loss is lower than the base's
    # (measured: 2.34 -> 1.41 after 30 steps on 8 samples)
    fit = report["fixed_noise_loss"]
    assert fit["adapted"] < 0.9 * fit["base"]
    assert report["render_change_8bit"] > 0  # base + DEFT renders differently from the base
    for name in ("loss.png", "samples.png"):
        assert Image.open(tmp_path / name).size[0] > 100
    proc = run_cli_here("demo", "--family", "omnigen2", "--steps", "0", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "argument --steps: '0' is 0; allowed: >= 1" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x").exists()


def test_the_studio_runs_omnigen2_from_its_defaults(world, tmp_path):
    from omnideft.studio.session import Request, Studio

    studio = Studio(str(world["base"]), adapter_roots=[str(world["tmp"])], outputs=str(tmp_path))
    assert isinstance(studio.generator, OmniGen2Generator), studio.messages
    usable = [i for i, a in enumerate(studio.adapters) if a.usable]
    assert len(usable) == 2  # the two OmniGen2 adapters; the v1 one is marked as trained on another base
    steps = []
    entry = studio.generate(Request("a red square", adapters=[(usable[0], 1.0)], height=32, width=32, steps=2,
                                    seed=3, options={"scheduler": "dpmsolver++"}),
                            on_step=lambda done, total: steps.append((done, total)))
    s = entry.settings
    assert (s.guidance, s.image_guidance) == (5.0, 2.0) and s.options["scheduler"] == "dpmsolver++"
    assert steps == [(1, 2), (2, 2)]
    assert "--family omnigen2" in entry.command_lines()[0] and "--scheduler dpmsolver++" in entry.command_lines()[0]
    fresh = Generator.from_pretrained(adapters=[studio.adapters[usable[0]].path])
    assert _pixels(Image.open(entry.outputs[0])).equal(_pixels(fresh("a red square", scheduler="dpmsolver++",
                                                                      **SMALL)[0]))
    with pytest.raises(UserError, match="camera: OmniGen2 has no camera conditioning"):
        studio.generate(Request("x", camera="1,0.5,0.5,0,1,0,0,0,0,0,0", height=32, width=32, steps=1))


def test_jobs_on_omnigen2_record_its_defaults_and_refuse_a_camera(world, tmp_path):
    from omnideft.generate.run import GenerateRequest, JobsFailed, run_generate

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "a red square", "seed": 3}\n'
                    '{"prompt": "x", "camera": "1,0.5,0.5,0,1,0,0,0,0,0,0"}\n')
    with pytest.raises(JobsFailed):
        run_generate(GenerateRequest(prompt=None, out=str(tmp_path / "out"), adapters=[str(world["adapters"][0])],
                                     jobs=str(jobs), height=32, width=32, steps=2, progress=False))
    report = json.loads((tmp_path / "out" / "jobs_report.json").read_text())
    assert report["done"] == [1] and "OmniGen2 has no camera conditioning" in report["failed"]["2"]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    settings = record["inputs"]
    assert (settings["guidance"], settings["image_guidance"], settings["family"]) == (5.0, 2.0, "omnigen2")
    fresh = Generator.from_pretrained(adapters=[world["adapters"][0]])
    assert _pixels(Image.open(tmp_path / "out" / "0001.png")).equal(_pixels(fresh("a red square", **SMALL)[0]))
