"""`omnideft export --format omnigen`: PEFT's layout keyed by the original OmniGen module paths, with a config PEFT
0.9 (what the official package pins) and the current PEFT both read; its rank_pattern keys; the refusal on another
family's base. The package itself loading it: tests/clients/test_omnigen_package.py."""

import json
import re

import pytest
import torch
from peft import LoraConfig, PeftConfig, PeftModel
from peft.utils.other import get_pattern_key
from safetensors.torch import load_file
from torch import nn
from transformers import Phi3Config, Phi3Model

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.adapters.compose import merge_adapters
from omnideft.adapters.export import adapter_deltas, as_lora, export_lora
from omnideft.adapters.portable_peft import matches_peft, matches_peft_0_9, pattern_key
from omnideft.errors import UserError
from omnideft.export.run import run_export
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.registry import get_family
from tests.clients.original_layout import to_original_state_dict
from tests.test_export import _saved

# every field of PEFT 0.9.0's LoraConfig (dataclasses.fields, measured in its environment): anything else is a
# TypeError there
PEFT_0_9_LORA_FIELDS = {
    "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "task_type", "inference_mode", "r",
    "target_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", "modules_to_save",
    "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "megatron_config",
    "megatron_core", "loftq_config", "use_dora"}


def _rank_0_9(config: dict, name: str) -> int:
    """The rank PEFT 0.9 gives module `name` (tuners/lora/model.py: the first pattern key matching, else r)."""
    keys = [*config["rank_pattern"], *config["alpha_pattern"]]
    key = next((k for k in keys if re.match(rf".*\.{k}$", name)), name)
    return config["rank_pattern"].get(key, config["r"])


def _original_llm(transformer) -> nn.Module:
    """A stand-in for the original OmniGen model, holding `transformer`'s weights: its `llm` is transformers'
    Phi3Model, whose module names and shapes the package's Phi3Transformer has."""
    c = transformer.config
    model = nn.Module()
    model.llm = Phi3Model(Phi3Config(hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads,
                                     num_key_value_heads=c.num_key_value_heads, num_hidden_layers=c.num_layers,
                                     intermediate_size=c.intermediate_size, vocab_size=c.vocab_size,
                                     pad_token_id=c.pad_token_id, eos_token_id=None, bos_token_id=None))
    original = to_original_state_dict(transformer.state_dict())
    model.llm.load_state_dict({k.removeprefix("llm."): v for k, v in original.items() if k.startswith("llm.")})
    return model


def test_omnigen_export_keys_original_paths_with_a_config_every_peft_reads(tmp_path):
    # q and v adapted, k not: the fused qkv_proj LoRA has rank 3 + 3, the other modules 3 (rank_pattern)
    model, folder = _saved(tmp_path, "a", method="deft", projector="qr",
                           targets=["to_q", "to_v", "to_out.0", "gate_up_proj", "down_proj"])
    report = run_export(str(folder), "omnigen", "tiny", str(tmp_path / "og"))
    assert "adapter_model.safetensors" in report and "exact LoRA form" in report
    tensors = load_file(str(tmp_path / "og" / "adapter_model.safetensors"))
    config = json.loads((tmp_path / "og" / "adapter_config.json").read_text())
    modules = {f"llm.layers.{n}.{p}" for n in (0, 1)
               for p in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")}
    assert set(tensors) == {f"base_model.model.{m}.lora_{x}.weight" for m in modules for x in "AB"}
    assert set(config) <= PEFT_0_9_LORA_FIELDS and config["peft_type"] == "LORA"
    assert sorted(config["target_modules"]) == sorted(modules)
    assert config["r"] == config["lora_alpha"] == 3
    assert config["rank_pattern"] == config["alpha_pattern"] == {f"layers.{n}.self_attn.qkv_proj": 6 for n in (0, 1)}
    for name in modules:  # both PEFT versions' pattern rules give every module its rank
        rank = tensors[f"base_model.model.{name}.lora_A.weight"].shape[0]
        assert _rank_0_9(config, name) == rank == config["rank_pattern"].get(
            get_pattern_key(config["rank_pattern"], name), config["r"]), name
    # current PEFT reads the config and loads every tensor onto the original modules; merged, the weights are
    # omnideft's merged ones exactly
    assert isinstance(PeftConfig.from_pretrained(str(tmp_path / "og")), LoraConfig)
    stand_in = _original_llm(load_omnigen("tiny").transformer)
    peft_model = PeftModel.from_pretrained(stand_in, str(tmp_path / "og"))
    loaded = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(tensors)
    merged = peft_model.merge_and_unload().state_dict()
    want = to_original_state_dict(merge_adapters(load_omnigen("tiny").transformer, [(str(folder), 1.0)]).state_dict())
    bare = to_original_state_dict(load_omnigen("tiny").transformer.state_dict())
    assert set(merged) == {k for k in want if k.startswith("llm.")}
    assert all(torch.equal(value, want[key]) for key, value in merged.items())
    assert {k.removesuffix(".weight") for k, v in merged.items() if not torch.equal(v, bare[k])} == modules


def test_rank_pattern_keys_match_one_module_under_both_peft_rules():
    targets = ["llm.layers.1.self_attn.qkv_proj", "llm.layers.11.self_attn.qkv_proj", "llm.layers.1.mlp.down_proj",
               "time_token.mlp.0", "t_embedder.mlp.0", "final_layer.linear", "proj_out"]
    keys = {name: pattern_key(name, targets) for name in targets}
    assert keys["llm.layers.1.self_attn.qkv_proj"] == "layers.1.self_attn.qkv_proj"  # not "1.self_attn...", nor 11
    assert keys["final_layer.linear"] == "linear"
    assert keys["time_token.mlp.0"] == r"(?<=^time_token\.)mlp\.0"  # `mlp.0` would match t_embedder.mlp.0 too
    assert keys["proj_out"] == "proj_out"  # one part: PEFT 0.9 matches no key to it, current PEFT this one
    for name, key in keys.items():
        assert [t for t in targets if matches_peft(key, t)] == [name]
        if "." in name:
            assert [t for t in targets if matches_peft_0_9(key, t)] == [name]


def test_omnigen_format_is_refused_on_another_familys_base(tmp_path):
    from omnideft.families.omnigen2.model.folder import load_omnigen2
    from omnideft.families.omnigen2.targets import target_modules as omnigen2_targets

    model = apply_adapter(load_omnigen2("tiny", seed=0).transformer,
                          AdapterSpec(method="deft", rank=2, init="paper", targets="attn"), targets=omnigen2_targets)
    folder = save_adapter(model, tmp_path / "adapter", base_name="tiny", family="omnigen2")
    with pytest.raises(UserError, match=r"^--format omnigen: OmniGen2 exports .*merged only \(no program loads its "
                                        r"omnigen export"):
        run_export(str(folder), "omnigen", "tiny", str(tmp_path / "out"))
    factors, _ = as_lora(adapter_deltas(model), 2)
    with pytest.raises(UserError, match="OmniGen2 has no LoRA file layout of that name"):
        export_lora(factors, "omnigen", tmp_path / "out", model.get_base_model(), {}, family=get_family("omnigen2"))
    assert not (tmp_path / "out").exists()
