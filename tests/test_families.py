"""The family conformance suite: every registered family (omnigen, omnigen2, the toy of tests/families/toy/ and any
family added later) passes the same tests, asked only through the family interface (omnideft/families/family.py)
and the verbs. Checks against each family's published pipeline stay in its own test files."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from peft import PeftModel
from PIL import Image
from safetensors.torch import load_file

from omnideft.adapters import AdapterSpec, apply_adapter, load_adapter, save_adapter
from omnideft.adapters.compose import merge_adapters
from omnideft.adapters.export import LORA_FORMATS
from omnideft.adapters.registry import METHODS
from omnideft.errors import UserError
from omnideft.families.family import Generator, ModelFamily, TrainingBackend
from omnideft.families.registry import all_export_formats, family_names, family_of_folder, get_family, resolve_family
from omnideft.shapes.shards import write_task_shards
from tests.helpers import REPO, assert_one_line_error, run_cli_here

FAMILIES = family_names()
SIDE = 32  # every output of the suite: 32 x 32 px, 2 steps


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return get_family(request.param)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # text to image ("draw"): a task every family takes
    return write_task_shards(tmp_path_factory.mktemp("family_shards"), ["draw"], n_samples=4, size=32, seed=0,
                             shard_size=2)


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_args(family, shards, out, *extra) -> list[str]:
    return ["train", "--no-progress", "model.name=tiny", f"model.family={family.name}", f"data.shards=[{shards}]",
            "data.max_image_size=32", "adapter.rank=2", "adapter.method=lora", "train.batch_size=2",
            "train.lr=1e-2", "train.max_steps=2", "train.checkpoint_every=1", f"output.dir={out}", *extra]


def _gauge_args(metric_models) -> list[str]:
    """The forgetting gauge at every step: the shipped generic probes, the tiny DINOv2."""
    return ["validation.every=1", "validation.steps=2", "retention.enabled=true",
            f"retention.dinov2_model={metric_models['dinov2']}"]


@pytest.fixture(scope="module")
def run(family, shards, metric_models, tmp_path_factory):
    """A 2-step LoRA run of the family's tiny through `omnideft train` (its base saved beside the adapter), with the
    forgetting gauge at both steps."""
    out = tmp_path_factory.mktemp(f"run_{family.name}")
    proc = run_cli_here(*_train_args(family, shards, out, *_gauge_args(metric_models)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# -- detection, loading and saving ------------------------------------------------------------------------------------

def test_a_saved_folder_is_detected_and_loads_back_the_same_weights(family, tmp_path):
    components = family.load("tiny", seed=3)
    (tmp_path / "model").mkdir()
    family.save(components, tmp_path / "model")
    assert family_of_folder(tmp_path / "model") is family
    assert resolve_family(str(tmp_path / "model")) is family
    assert resolve_family(str(tmp_path / "model"), family.name) is family
    back = family.load(str(tmp_path / "model"))
    assert _same_state(_state(back.transformer), _state(components.transformer))
    assert not _same_state(_state(family.load("tiny", seed=4).transformer), _state(components.transformer))
    for other in set(FAMILIES) - {family.name}:
        with pytest.raises(UserError, match=f"is an {re.escape(family.title)} folder, but the family asked for") as err:
            resolve_family(str(tmp_path / "model"), other)
        assert "\n" not in str(err.value)


def test_presets_and_recorded_families_resolve(family):
    for preset in family.presets:
        assert resolve_family(preset, family.name) is family
        assert resolve_family(preset, recorded=family.name) is family  # the adapter's recorded family decides
    if not family.hub_ids:
        with pytest.raises(UserError, match=f"{re.escape(family.title)} loads from"):
            resolve_family("someone/some-model", family.name)
    defaults = family.defaults(family.presets[0])
    assert defaults.size > 0 and defaults.steps > 0 and defaults.guidance > 0


def test_each_family_declares_its_own_negative_prompt():
    """The studio's negative-prompt box starts from `defaults.negative_prompt`: each family's published text."""
    from omnideft.families.omnigen.processor import NEGATIVE_PROMPT as OMNIGEN
    from omnideft.families.omnigen2.model.prompt import NEGATIVE_PROMPT as OMNIGEN2

    assert get_family("omnigen").defaults("small").negative_prompt == OMNIGEN
    assert get_family("omnigen2").defaults("tiny").negative_prompt == OMNIGEN2


def test_target_presets_name_linear_layers(family):
    transformer = family.load("tiny").transformer
    linears = {n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    attn, every = family.target_modules(transformer, "attn"), family.target_modules(transformer, "all-linear")
    assert attn and set(attn) <= set(every) <= linears
    assert set(family.target_modules(transformer, "attn", include_embedders=True)) >= set(attn)
    assert family.target_modules(transformer, [attn[0]]) == [attn[0]]
    with pytest.raises(UserError, match="not a preset"):
        family.target_modules(transformer, "everything")


PART_KINDS = {"target_modules": "function", "plan_entry": "function", "lora_keys": "function",
              "convert_original": "function", "training": TrainingBackend, "generator": Generator,
              "components": object, "pretraining": "module"}


def test_every_declared_part_imports_and_is_what_the_interface_says(family):
    assert set(family.parts) <= set(PART_KINDS), set(family.parts) - set(PART_KINDS)
    for name in family.parts:
        found, kind = family.part(name), PART_KINDS[name]
        if kind == "module":
            assert inspect.ismodule(found), name
        elif kind == "function":
            assert inspect.isfunction(found), name
        else:
            assert inspect.isclass(found) and issubclass(found, kind), name
    required = {"target_modules": "target_modules", "plan_entry": "plan_entry", "training": "training_backend",
                "generator": "generator_class", "components": "owns_components"}  # part -> the method asking it
    for name, method in required.items():  # each declared, or its method written by the family
        assert name in family.parts or getattr(type(family), method) is not getattr(ModelFamily, method), name
    with pytest.raises(NotImplementedError, match="declares no part 'nothing'"):
        family.part("nothing")


def test_refusals_are_generated_from_the_declarations(family):
    for feature, why in family.unsupported.items():
        assert not family.supports(feature)
        with pytest.raises(UserError, match=f"^the ask: {re.escape(family.title)} ") as err:
            family.refuse(feature, "the ask")
        assert why in str(err.value) and "\n" not in str(err.value)
    family.refuse("a feature no family lacks", "x")  # supported: nothing raised
    if family.max_input_images is not None:
        family.check_input_images(family.max_input_images)
        with pytest.raises(UserError, match=f"takes at most {family.max_input_images}"):
            family.check_input_images(family.max_input_images + 1)


def test_the_cli_offers_every_family():
    for verb in ("generate", "demo"):
        proc = run_cli_here(verb, "--help")
        assert all(name in proc.stdout for name in FAMILIES), (verb, proc.stdout[-1500:])


# -- adapters ---------------------------------------------------------------------------------------------------------

def _adapter(family, folder, method: str = "lora"):
    """An adapter of `method` on the family's attn preset with non-zero deltas, saved in `folder`."""
    transformer = family.load("tiny").transformer
    spec = AdapterSpec(method=method, rank=2, targets=family.target_modules(transformer, "attn"), init="paper")
    model = apply_adapter(transformer, spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    return save_adapter(model, folder, base_name="tiny", family=family.name)


def test_an_adapter_of_another_family_is_refused_in_one_line(family, tmp_path):
    folder = _adapter(family, tmp_path / "adapter")
    assert json.loads((folder / "omnideft.json").read_text())["base"]["family"] == family.name
    for other in map(get_family, set(FAMILIES) - {family.name}):
        refused = f"trained on {re.escape(family.title)} .*this base is {re.escape(other.title)}"
        base = other.load("tiny")
        with pytest.raises(UserError, match=refused) as err:
            load_adapter(base.transformer, folder, family=other)
        assert "\n" not in str(err.value)
        generator = other.generator(base, device="cpu")
        for merge in (True, False):  # merged or loaded as is, the Generator asks the family too
            generator.merge = merge
            with pytest.raises(UserError, match=refused):
                generator.set_adapters([str(folder)])
            assert generator.adapters == []


def test_train_stop_resume_is_bit_identical(family, shards, run, metric_models, tmp_path):
    """With the forgetting gauge on: the resumed run reads the base's answers back instead of rendering them, and
    logs the drift the uninterrupted run logged."""
    meta = json.loads((run / "adapter" / "omnideft.json").read_text())
    assert meta["step"] == 2 and meta["base"]["family"] == family.name
    assert family_of_folder(run / "base") is family
    gauge = _gauge_args(metric_models)
    cut = run_cli_here(*_train_args(family, shards, tmp_path, "train.max_steps=1", *gauge))
    assert cut.returncode == 0, cut.stderr[-3000:]
    answers = tmp_path / "retention" / "base" / "answers.json"
    written = answers.stat().st_mtime_ns
    resumed = run_cli_here(*_train_args(family, shards, tmp_path, *gauge), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(step 1)" in resumed.stderr
    a, b, cut_at = (load_file(r / "adapter_model.safetensors")
                    for r in (run / "adapter", tmp_path / "adapter", tmp_path / "checkpoints" / "step-0000001"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], cut_at[k]) for k in a)  # the step after the resume changed the adapter
    losses = [[json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (run, tmp_path)]
    assert losses[0] == losses[1]
    assert answers.stat().st_mtime_ns == written  # kept, not rendered again
    drifts = [[json.loads(x)["retention/drift"] for x in (r / "metrics.jsonl").read_text().splitlines()]
              for r in (run, tmp_path)]
    assert drifts[0] == drifts[1] and len(drifts[0]) == 2  # the gauge at every validation, the same numbers
    report = json.loads((tmp_path / "retention.json").read_text())
    assert [v["step"] for v in report["validations"]] == [1, 2]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_adapter_method_trains_a_step_and_reloads(family, shards, method, tmp_path):
    proc = run_cli_here(*_train_args(family, shards, tmp_path, f"adapter.method={method}", "train.max_steps=1",
                                     "train.checkpoint_every=0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "adapter" / "omnideft.json").read_text())["method"] == method
    load_adapter(family.load(str(tmp_path / "base")).transformer, tmp_path / "adapter", family=family)


def test_export_round_trips_to_the_exact_merged_weights(family, run, tmp_path):
    base, adapter = str(run / "base"), run / "adapter"
    want = _state(merge_adapters(family.load(base).transformer, [(str(adapter), 1.0)]))
    bare = _state(family.load(base).transformer)
    for fmt in family.export_formats:
        out = tmp_path / fmt
        proc = run_cli_here("export", str(adapter), "--format", fmt, "--base", base, "--out", str(out))
        assert proc.returncode == 0, (fmt, proc.stderr[-3000:])
        if fmt == "merged":
            assert family_of_folder(out) is family
            assert _same_state(_state(family.load(str(out)).transformer), want)
            continue
        files = sorted(out.glob("*.safetensors"))
        assert files, fmt
        if fmt == "peft-lora":  # PEFT itself loads it on the bare base
            stock = PeftModel.from_pretrained(family.load(base).transformer, str(out)).merge_and_unload()
            assert all(torch.allclose(v, want[k], atol=1e-6) for k, v in _state(stock).items()), fmt
        prefix = {"peft-lora": "base_model.model.", "diffusers": "transformer."}.get(fmt)
        if prefix:  # module names in PEFT's / diffusers' keys: the factors rebuild the merged weights
            tensors = load_file(files[0])
            got = dict(bare)
            for key in [k for k in tensors if k.endswith("lora_A.weight")]:
                name = key.removeprefix(prefix).removesuffix(".lora_A.weight") + ".weight"
                got[name] = got[name] + tensors[key.replace("lora_A", "lora_B")] @ tensors[key]
            assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want), fmt
    for fmt in set(all_export_formats()) - set(family.export_formats):  # refused from the declaration, nothing written
        proc = run_cli_here("export", str(adapter), "--format", fmt, "--base", base, "--out", str(tmp_path / fmt))
        assert_one_line_error(proc, f"--format {fmt}: {family.title} exports")
        assert not (tmp_path / fmt).exists()


def test_every_offered_format_names_a_client_and_the_test_that_proves_it():
    """The client matrix (docs/export.md) is the families' declarations: every offered format of every registered
    family names at least one program with the test that loads the export its way, and that test exists. The pip
    versions it names are the ones the tests run with (requirements/constraints.txt, or a client's own environment
    script, scripts/*_client_env.sh)."""
    pins = {(name, version) for name, version in (line.split("==") for line in (REPO / "requirements" /
            "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))}
    for script in (REPO / "scripts").glob("*_client_env.sh"):  # a client's own environment pins its own versions
        pins |= set(re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s)\"']*)", script.read_text()))
    tests = set()
    for family in map(get_family, FAMILIES):
        assert family.export_formats, family.name
        for fmt, clients in family.export_formats.items():
            writable = fmt in (*LORA_FORMATS, "merged", *family.peft_layout_formats)  # the shared writer knows it
            assert writable and clients, (family.name, fmt)
            for client in clients:
                assert client.name and client.call and client.versions and client.test.startswith("tests/"), client
                for package, pinned in re.findall(r"([A-Za-z0-9_.-]+)==([^\s,;)]+)", client.versions):
                    assert (package, pinned) in pins, (family.name, fmt, package, pinned)
                tests.add(client.test)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *sorted(tests)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = proc.stdout.splitlines()
    for test in tests:  # a node id without [params] collects all of its cases
        assert any(line == test or line.startswith(test + "[") for line in collected), test


def test_the_gauge_sees_no_drift_from_an_adapter_that_changes_nothing(family, metric_models, tmp_path):
    """The forgetting gauge through the family interface alone: the base answers its probes, then the same base under
    a fresh LoRA (B = 0: the base's function) answers them with the same seeds: the same pixels, drift 0."""
    from omnideft.eval.retention import RetentionGauge
    from omnideft.train.recipe import load_recipe

    recipe = load_recipe(None, ["model.name=tiny", f"model.family={family.name}", "data.max_image_size=32",
                                "validation.steps=2", "retention.enabled=true", "retention.seeds=[0, 1]",
                                f"retention.dinov2_model={metric_models['dinov2']}"])
    gauge = RetentionGauge(recipe)
    components = family.load("tiny")
    gauge.prepare(components, "cpu", tmp_path, resuming=False)
    gauge.begin(tmp_path, 0)
    spec = AdapterSpec(method="lora", rank=2, targets=family.target_modules(components.transformer, "attn"))
    model = apply_adapter(components.transformer, spec)
    record = gauge.measure(model, components, 0, tmp_path)
    assert record["drift"] == pytest.approx(0.0, abs=1e-6)
    assert all(p["drift"] == pytest.approx(0.0, abs=1e-6) for p in gauge.history[0]["pairs"])
    assert len(gauge.history[0]["pairs"]) == 2 * len(gauge.probes)
    assert Image.open(tmp_path / "retention" / "step-0000000.png").size[0] > 0


# -- generation -------------------------------------------------------------------------------------------------------

def test_generator_image_k_is_seed_plus_k_and_adapters_swap(family, run):
    generator = family.generator(family.load(str(run / "base")), device="cpu")
    assert generator.family is family and generator.adapters == [] and generator.fingerprint
    assert generator.output_size((), SIDE, SIDE) == (SIDE, SIDE)
    settings = dict(height=SIDE, width=SIDE, steps=2, output_type="np")
    two = generator("draw a red circle", seed=5, n=2, **settings)
    assert [a.shape for a in two] == [(SIDE, SIDE, 3)] * 2
    for k in range(2):
        assert (generator("draw a red circle", seed=5 + k, **settings)[0] == two[k]).all()
    generator.set_adapters([str(run / "adapter")])
    assert generator.adapters == [(str(run / "adapter"), 1.0)]
    adapted = generator("draw a red circle", seed=5, **settings)[0]
    assert not (adapted == two[0]).all()
    generator.set_adapters([])
    assert (generator("draw a red circle", seed=5, **settings)[0] == two[0]).all()  # the bare base, not read again


def test_the_cli_renders_the_generators_pixels(family, run, tmp_path):
    args = ["--model", str(run / "base"), "--adapter", str(run / "adapter"), "--prompt", "draw a red circle",
            "--steps", "2", "--height", str(SIDE), "--width", str(SIDE), "--seed", "7"]
    # the family is detected from the base folder (test_the_cli_offers_every_family checks the --family choices)
    proc = run_cli_here("generate", *args, "--out", str(tmp_path / "a.png"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    generator = family.generator(family.load(str(run / "base")), device="cpu")
    generator.set_adapters([str(run / "adapter")])
    want = generator("draw a red circle", seed=7, height=SIDE, width=SIDE, steps=2)[0]
    assert (np.asarray(Image.open(tmp_path / "a.png").convert("RGB")) == np.asarray(want)).all()


def test_validation_renders_eval_and_plan_run(family, shards, run, tmp_path):
    prompts = "validation.prompts=[{prompt: 'draw a red circle', height: 32, width: 32}]"
    proc = run_cli_here(*_train_args(family, shards, tmp_path / "run", "train.max_steps=1", prompts,
                                     "validation.steps=2", "train.checkpoint_every=0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(next((tmp_path / "run" / "validation").rglob("00.png"))).size == (SIDE, SIDE)
    proc = run_cli_here("eval", "--model", str(run / "base"), "--adapter", str(run / "adapter"), "--shards",
                        str(shards), "--samples", "2", "--repeats", "1", "--max-image-size", "32",
                        "--out", str(tmp_path / "eval"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli_here("plan", str(run / "recipe.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "**peak per GPU**" in proc.stdout, proc.stdout


def test_eval_of_a_preset_base_is_the_family_asked_for(family, shards, run, tmp_path):
    """A preset name exists in every family: `--family` picks whose, so the preset's loss is its saved folder's."""
    losses = {}
    for name, model in (("folder", [str(run / "base")]), ("preset", ["tiny", "--family", family.name])):
        proc = run_cli_here("eval", "--model", *model, "--shards", str(shards), "--samples", "2", "--repeats", "1",
                            "--max-image-size", "32", "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[name] = json.loads((tmp_path / f"{name}.json").read_text())["results"]["base"]["all"]
    assert losses["preset"] == losses["folder"]


def test_bench_runs_on_the_run(family, run, metric_models, tmp_path):
    from tests.metric_models import metric_flags

    proc = run_cli_here("bench", "retention", "--model", str(run / "base"), "--adapter", str(run / "adapter"),
                        "--limit", "1", "--steps", "2", "--height", str(SIDE), "--width", str(SIDE),
                        "--out", str(tmp_path / "bench"), *metric_flags(metric_models))
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = list((tmp_path / "bench").rglob("*.png"))
    assert images and Image.open(images[0]).size == (SIDE, SIDE)
    assert (tmp_path / "bench" / "summary.json").is_file()


def test_the_demo_is_the_one_the_family_declares(family, tmp_path):
    """Running a demo takes a minute or more: its own tests run it; here, what `omnideft demo --family` starts from."""
    from omnideft.demo import DEMOS, demo_settings, run_family_demo

    if family.demo_preset is not None:
        assert demo_settings(family.name)["demo"] in DEMOS
        return
    with pytest.raises(UserError, match=f"^demo --family {family.name}: {re.escape(family.title)} has no demo") as err:
        run_family_demo(family.name, str(tmp_path / "demo"))
    assert "\n" not in str(err.value) and not (tmp_path / "demo").exists()


def test_unsupported_recipe_keys_are_refused_before_training(family, shards, tmp_path):
    asks = {"camera": "camera.encoding=learned", "latents": f"data.latents={tmp_path / 'cache'}",
            "quantize": "model.quantize=int8", "mllm_targets": "adapter.mllm_targets=language"}
    for feature, ask in asks.items():
        if family.supports(feature):
            continue
        proc = run_cli_here(*_train_args(family, shards, tmp_path / feature, ask))
        assert_one_line_error(proc, f"{ask}: {family.title} {family.unsupported[feature]}")
        assert not (tmp_path / feature).exists() or not any((tmp_path / feature).iterdir())


def test_cache_latents_is_refused_where_the_family_has_no_latent_cache(family, shards, tmp_path):
    from omnideft.train.cache_latents import cache_latents

    if family.supports("latents"):
        return  # tests/test_latents.py builds and trains from caches
    with pytest.raises(UserError, match=f"^cache-latents --model tiny .*: {re.escape(family.title)} "
                                        f"{re.escape(family.unsupported['latents'])}$"):
        cache_latents([str(shards)], "tiny", str(tmp_path / "cache"), 32, family=family.name, progress=False)
    assert not (tmp_path / "cache").exists()


# -- the toy itself ---------------------------------------------------------------------------------------------------

def test_the_toys_generator_is_its_sampler():
    """The shared surface adds nothing to the toy's own Euler sampler: the same pixels."""
    from tests.families.toy.model import sample

    toy = get_family("toy")
    components = toy.load("tiny")
    generator = toy.generator(components)
    got = generator("draw a red circle", seed=2, steps=3, guidance=3.0, output_type="np", shift=2.0)[0]
    want = sample(components.transformer, components.vocabulary, "draw a red circle", seed=2, height=16, width=16,
                  steps=3, guidance=3.0, shift=2.0)
    assert torch.equal(torch.from_numpy(got), want.permute(1, 2, 0))
    with pytest.raises(UserError, match=r"^1 reference images .*; Toy DiT takes at most 0$"):
        generator("x", images=[Image.new("RGB", (16, 16))])


def test_the_toys_training_backend_learns_and_refuses_from_its_declarations(shards):
    """The toy's TrainingBackend used as the trainer uses it: batches, the loss with the run's noise generator."""
    from omnideft.adapters.apply import param_groups
    from omnideft.data.loader import ResumableBatches, index_sources
    from omnideft.data.sources import resolve_sources
    from omnideft.train.recipe import load_recipe

    toy = get_family("toy")
    recipe = load_recipe(None, ["model.name=tiny", "model.family=auto", f"data.shards=[{shards}]"])
    backend = toy.training(recipe)
    components = backend.load("cpu")
    spec = AdapterSpec(method="lora", rank=2, targets=toy.target_modules(components.transformer, "all-linear"))
    model = apply_adapter(components.transformer, spec)
    backend.after_adapter(components, spec)
    builder = backend.batch_builder(components)
    sources = resolve_sources([str(shards)])
    batch, _ = next(iter(ResumableBatches(sources, index_sources(sources), seed=0, batch_size=4,
                                          size_of=builder.output_size, build=builder).loader()))
    assert batch["pixels"].shape == (4, 3, 16, 16) and len(batch["tasks"]) == 4
    optimizer = torch.optim.Adam(param_groups(model, spec, lr=3e-2))
    losses = []
    for _ in range(30):
        loss = backend.loss(model, components, batch, torch.Generator().manual_seed(0), contextlib.nullcontext)
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        losses.append(loss.mean().item())
    assert losses[-1] < 0.9 * losses[0]
    with pytest.raises(UserError, match="camera.encoding=learned: Toy DiT has no camera conditioning"):
        toy.training(load_recipe(None, ["model.name=tiny", f"data.shards=[{shards}]", "camera.encoding=learned"]))
