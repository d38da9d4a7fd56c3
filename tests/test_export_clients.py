"""The client matrix (docs/export.md, the families' `export_formats`): each offered export, loaded the way its program
loads it. Programs that pip installs run here (PEFT, diffusers); ComfyUI and the official OmniGen2 code cannot be
installed, so their key rules and LoRA math were read from their source into tests/clients/*.json (repository, commit,
file and line) and are applied here to omnideft's files: every key must land on a module of that program's model, and
the weights it builds must be the merged export's."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.loaders import PeftAdapterMixin
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.adapters.compose import merge_adapters
from omnideft.export.run import run_export
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from omnideft.families.omnigen2.model.folder import load_omnigen2
from omnideft.families.omnigen2.targets import target_modules as omnigen2_targets
from omnideft.families.registry import get_family
from tests.diffusers_reference import diffusers_pipeline_class
from tests.helpers import REPO

CLIENTS = REPO / "tests" / "clients"
COMFYUI = json.loads((CLIENTS / "comfyui_facts.json").read_text())
OFFICIAL = json.loads((CLIENTS / "omnigen2_facts.json").read_text())
with safe_open(str(REPO / "tests" / "data" / "omnigen2_reference.safetensors"), "pt") as _f:
    PUBLISHED = json.loads(_f.metadata()["transformer_keys"])  # the official class's parameter names and shapes
OMNIGEN2 = get_family("omnigen2")


def _state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def omnigen2_exports(tmp_path_factory):
    """One DEFT adapter on every linear of the tiny OmniGen2 (69 modules), exported in every format OmniGen2
    offers; with the bare and the merged transformer weights."""
    tmp = tmp_path_factory.mktemp("og2_exports")
    torch.manual_seed(0)
    model = apply_adapter(load_omnigen2("tiny", seed=0).transformer,
                          AdapterSpec(method="deft", rank=3, init="paper"), targets=omnigen2_targets)
    adapter = save_adapter(model, tmp / "adapter", base_name="tiny", family="omnigen2")
    reports = {fmt: run_export(str(adapter), fmt, "tiny", str(tmp / fmt)) for fmt in OMNIGEN2.export_formats}
    merged = _state(load_omnigen2(str(tmp / "merged")).transformer)
    bare = _state(load_omnigen2("tiny", seed=0).transformer)
    assert sum(not torch.equal(merged[k], bare[k]) for k in bare) == 69
    return {"dir": tmp, "reports": reports, "merged": merged, "bare": bare}


def _lora_file(exports, fmt) -> dict:
    (path,) = (exports["dir"] / fmt).glob("*.safetensors")
    return load_file(str(path))


# -- ComfyUI (its rules: tests/clients/comfyui_facts.json) -------------------------------------------------------------

def comfyui_linears(config: dict) -> set[str]:
    """The linear modules of ComfyUI's OmniGen2 model for a transformer config, as its model file builds them."""
    linear = COMFYUI["models"]["omnigen2"]["linear_modules"]
    names = set(linear["model"])
    for blocks, count in linear["block_lists"].items():
        for i in range(config[count]):
            names |= {f"{blocks}.{i}.{m}" for m in linear["block"]}
            if blocks not in linear["unmodulated_block_lists"]:
                names |= {f"{blocks}.{i}.{m}" for m in linear["modulated_block"]}
    return names


def comfyui_load(lora: dict, weights: dict) -> tuple[dict, set]:
    """ComfyUI's load_lora_for_models on an OmniGen2 model whose state dict is `weights`
    ('diffusion_model.<path>.weight'), strength 1: (the patched weights, the file's keys it did not use)."""
    prefix = COMFYUI["models"]["omnigen2"]["state_dict_prefix"]
    rules = COMFYUI["lora_key_map"]["every_model"] + COMFYUI["lora_key_map"]["omnigen2"]
    key_map = {}
    for key in weights:
        path = key.removeprefix(prefix).removesuffix(".weight")
        key_map.update({rule.format(path=path, path_underscored=path.replace(".", "_")): key for rule in rules})
    out, used = dict(weights), set()
    for stem, target in key_map.items():
        for up, down in (tuple(t.format(stem=stem) for t in pair) for pair in COMFYUI["lora_pairs"]["pairs"]):
            if up not in lora:
                continue
            alpha = COMFYUI["lora_pairs"]["alpha"].format(stem=stem)
            scale = lora[alpha].item() / lora[down].shape[0] if alpha in lora else 1.0
            out[target] = out[target] + scale * (lora[up].flatten(1) @ lora[down].flatten(1)).reshape(out[target].shape)
            used |= {up, down, alpha} & set(lora)
            break
    return out, set(lora) - used


def _comfyui_weights(exports) -> dict:
    """The bare tiny OmniGen2 as ComfyUI's model holds it: its linears, by ComfyUI's names (KeyError if omnideft had
    no such module)."""
    config = load_omnigen2("tiny", seed=0).transformer.config
    prefix = COMFYUI["models"]["omnigen2"]["state_dict_prefix"]
    return {f"{prefix}{n}.weight": exports["bare"][f"{n}.weight"] for n in comfyui_linears(config)}


def test_omnigen2_linears_are_comfyuis_modules():
    transformer = load_omnigen2("tiny", seed=0).transformer
    ours = {n for n, m in transformer.named_modules() if isinstance(m, nn.Linear)}
    assert comfyui_linears(transformer.config) == ours and len(ours) == 69


@pytest.mark.parametrize("fmt", ["comfyui", "kohya"])
def test_comfyui_reads_every_key_of_the_omnigen2_export_exactly(omnigen2_exports, fmt):
    lora = _lora_file(omnigen2_exports, fmt)
    weights = _comfyui_weights(omnigen2_exports)
    patched, unused = comfyui_load(lora, weights)
    assert unused == set()  # ComfyUI would log "lora key not loaded" for each
    prefix = COMFYUI["models"]["omnigen2"]["state_dict_prefix"]
    merged = omnigen2_exports["merged"]
    changed = [k for k in weights if not torch.equal(patched[k], weights[k])]
    assert len(changed) == 69
    for key in weights:
        want = merged[key.removeprefix(prefix)]
        torch.testing.assert_close(patched[key], want, rtol=0, atol=1e-6 * want.abs().max().item(), msg=key)


@pytest.mark.parametrize("fmt", ["peft-lora", "diffusers"])
def test_comfyui_uses_no_key_of_the_omnigen2_peft_and_diffusers_files(omnigen2_exports, fmt):
    """Why the matrix names no ComfyUI for these: its OmniGen2 rules map neither `base_model.model.` nor
    `transformer.` names."""
    lora = _lora_file(omnigen2_exports, fmt)
    weights = _comfyui_weights(omnigen2_exports)
    patched, unused = comfyui_load(lora, weights)
    assert unused == set(lora) and all(torch.equal(patched[k], weights[k]) for k in weights)


# -- the official OmniGen2 code (tests/clients/omnigen2_facts.json) ----------------------------------------------------

def test_official_omnigen2_loader_reads_the_diffusers_export_exactly(omnigen2_exports):
    loader = OFFICIAL["lora_loader"]
    lora = _lora_file(omnigen2_exports, "diffusers")
    assert all(loader["requires_in_every_key"] in k for k in lora)  # else "Invalid LoRA checkpoint."
    assert not any(k.startswith("diffusion_model.") for k in lora)  # else renamed as a Lumina2 file
    a_name, b_name = loader["pairs"]
    modules = {k.removeprefix(loader["prefix"]).removesuffix(".lora_A.weight") for k in lora
               if k.endswith(".lora_A.weight")}
    assert len(modules) == 69 and len(lora) == 2 * 69 and all(k.startswith(loader["prefix"]) for k in lora)
    for m in modules:  # every module is one of the official transformer's, with its shape
        b, a = (lora[loader["prefix"] + t.format(module=m)] for t in (b_name, a_name))
        assert PUBLISHED[f"{m}.weight"] == [b.shape[0], a.shape[1]], m
    # its last step: diffusers' load_lora_adapter (installed) on a transformer with the official class's
    # PeftAdapterMixin
    transformer = load_omnigen2("tiny", seed=0).transformer
    transformer.__class__ = type("WithPublishedBases", (PeftAdapterMixin, type(transformer)), {})
    transformer.load_lora_adapter(dict(lora), network_alphas=None)
    for layer in transformer.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.merge()
    got = {k.replace(".base_layer", ""): v for k, v in transformer.state_dict().items() if ".lora_" not in k}
    merged = omnigen2_exports["merged"]
    assert got.keys() == merged.keys()
    for k, want in merged.items():
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6 * want.abs().max().item(), msg=k)


def test_the_installed_diffusers_breaks_the_official_loader():
    """The matrix's note on the diffusers format: the official loader (lora_pipeline.py:136) takes
    `_fetch_state_dict`'s value for the state dict, a (state_dict, metadata) tuple since diffusers 0.34; its line
    151 then fails. When this stops failing, the note (families/omnigen2 export_formats) is out of date."""
    from diffusers.loaders.lora_base import _fetch_state_dict

    lora = {"transformer.x.lora_A.weight": torch.zeros(1, 1)}
    value = _fetch_state_dict(pretrained_model_name_or_path_or_dict=lora, weight_name=None, use_safetensors=True,
                              local_files_only=True, cache_dir=None, force_download=False, proxies=None, token=None,
                              revision=None, subfolder=None, user_agent={}, allow_pickle=True)
    assert isinstance(value, tuple) and value[0] is lora
    with pytest.raises(TypeError):
        any("dora_scale" in k for k in value)  # lora_pipeline.py:151, as written


def test_peft_loads_the_omnigen2_export_on_the_published_names(omnigen2_exports):
    folder = omnigen2_exports["dir"] / "peft-lora"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert all(f"{m}.weight" in PUBLISHED for m in config["target_modules"]) and len(config["target_modules"]) == 69
    got = _state(PeftModel.from_pretrained(load_omnigen2("tiny", seed=0).transformer, str(folder)).merge_and_unload())
    merged = omnigen2_exports["merged"]
    assert got.keys() == merged.keys()
    for k, want in merged.items():
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6 * want.abs().max().item(), msg=k)


def test_omnigen2_merged_folder_has_the_published_parameter_names(omnigen2_exports):
    folder = omnigen2_exports["dir"] / "merged"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "OmniGen2Pipeline"
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert config["_class_name"] == OFFICIAL["transformer"]["class"].split("(")[0]
    saved = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert {k: list(v.shape) for k, v in saved.items()} == PUBLISHED


def test_the_report_names_each_files_client(omnigen2_exports):
    for fmt, report in omnigen2_exports["reports"].items():
        head, *files = report.splitlines()
        clients = OMNIGEN2.export_formats[fmt]
        written = sorted((omnigen2_exports["dir"] / fmt).iterdir()) if fmt != "merged" else [None]
        assert len(files) == len(written), report
        assert all(f"for {clients[0].name}: {clients[0].call}" in line for line in files), report
        if fmt != "merged":
            assert head.startswith(f"{fmt}: 69 modules (exact LoRA form)"), report
            with safe_open(str(next((omnigen2_exports["dir"] / fmt).glob("*.safetensors"))), "pt") as f:
                assert f.metadata()["export_format"] == fmt and f.metadata()["base"] == "tiny"


# -- OmniGen (v1) -----------------------------------------------------------------------------------------------------

def test_omnigen_merged_folder_loads_in_diffusers_pipeline(tmp_path):
    torch.manual_seed(0)
    model = apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(method="deft", rank=3, init="paper"),
                          targets=omnigen_targets)
    adapter = save_adapter(model, tmp_path / "adapter", base_name="tiny")
    run_export(str(adapter), "merged", "tiny", str(tmp_path / "merged"))
    pipe = diffusers_pipeline_class().from_pretrained(str(tmp_path / "merged"))  # OmniGenPipeline
    want = _state(merge_adapters(load_omnigen("tiny").transformer, [(str(adapter), 1.0)]))
    got = _state(pipe.transformer)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert not all(torch.equal(got[k], v) for k, v in _state(load_omnigen("tiny").transformer).items())
