"""`omnideft export --format omnigen` loaded by the official OmniGen (v1) package itself: its
`OmniGenPipeline.merge_lora` (PEFT 0.9.0) in its own environment (scripts/omnigen_client_env.sh), on the `tiny`
base written in the package's original layout (the package's pipeline draws 4-channel latents, pipeline.py line 229,
as `tiny` has; the shipped `small` has 8). Every LoRA tensor of the file must be applied and the merged
weights must equal omnideft's `--format merged` export exactly (max |dW| = 0), for an adapter on every q/k/v (and the
embedders) and one on only some of them (the fused qkv then has its own rank: PEFT's rank_pattern).

The environment lives at $OMNIDEFT_OMNIGEN_ENV (default <repo>/.client-envs/omnigen); without it the test fails in CI
and is skipped elsewhere. docs/clients.md has the manual command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.export.run import run_export
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from tests.clients.original_layout import write_original_base, write_original_weights
from tests.helpers import REPO

ENV = Path(os.environ.get("OMNIDEFT_OMNIGEN_ENV") or REPO / ".client-envs" / "omnigen")
CHECK = REPO / "tests" / "clients" / "omnigen_package_check.py"
BASE = "tiny"
# name -> adapter settings on the base: every q/k/v at one rank (fused: rank 3r) plus the embedders' linears; and q/v
# only, at another rank than o/down (fused qkv rank 2r, a rank_pattern entry, beside unadapted k rows)
CASES = {
    "all_qkv_and_embedders": dict(rank=4, targets="all-linear", include_embedders=True),
    "q_and_v_only": dict(rank=3, targets=["to_q", "to_v", "to_out.0", "down_proj"]),
}


def client_python() -> Path:
    python = ENV / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"no OmniGen package environment at {ENV}: build it with `bash scripts/omnigen_client_env.sh` "
                    "(scripts/test.sh does), or set OMNIDEFT_OMNIGEN_ENV")
    return python


def run_package_check(tmp_path: Path, render: bool = True) -> tuple[dict, str]:
    """Build the original-layout base and the adapters' omnigen + merged exports, run the package's check in its
    own environment; returns (its JSON report, its printed lines)."""
    python = client_python()
    components = load_omnigen(BASE)
    base = write_original_base(components, tmp_path / "original-base")
    adapters = []
    for name, settings in CASES.items():
        torch.manual_seed(len(adapters))
        model = apply_adapter(load_omnigen(BASE).transformer,
                              AdapterSpec(method="deft", projector="qr", init="paper", **settings),
                              targets=omnigen_targets)
        folder = save_adapter(model, tmp_path / name / "adapter", base_name=BASE)
        run_export(str(folder), "omnigen", BASE, str(tmp_path / name / "omnigen"))
        run_export(str(folder), "merged", BASE, str(tmp_path / name / "merged"))
        reference = write_original_weights(load_omnigen(str(tmp_path / name / "merged")).transformer,
                                           tmp_path / name / "merged-original")
        adapters.append({"name": name, "lora": str(tmp_path / name / "omnigen"), "reference": str(reference)})
    spec = tmp_path / "check.json"
    spec.write_text(json.dumps({"base": str(base), "render": render, "adapters": adapters}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), str(CHECK), str(spec)], capture_output=True, text=True, timeout=900,
                          env={**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_the_official_package_merges_the_omnigen_export_exactly(tmp_path):
    report, printed = run_package_check(tmp_path)
    print(printed)
    assert report["peft"] == "0.9.0"
    # the base's sizes: the package's from_pretrained builds a 192 grid and 256 timestep frequencies, and refuses it
    assert (report["pos_embed_grid"], report["timestep_frequencies"]) == (32, 32)
    assert report["omnigen_from_pretrained"] == ("RuntimeError: size mismatch for pos_embed, time_token.mlp.0.weight, "
                                                 "t_embedder.mlp.0.weight")
    for name, out in report["adapters"].items():
        config = json.loads((tmp_path / name / "omnigen" / "adapter_config.json").read_text())
        modules = config["target_modules"]
        assert out["tensors_in_file"] == out["tensors_applied"] == 2 * len(modules), (name, out["not_applied"])
        assert out["modules_wrapped"] == out["modules_changed"] == len(modules), name
        assert sorted(out["changed"]) == sorted(modules), name  # exactly the adapted modules, by original name
        assert out["max_abs_dW"] == 0.0, (name, out["worst_key"])
        assert out["render_differs_from_base"], name  # the merged pipeline renders, and the adapter shows
    every = report["adapters"]["all_qkv_and_embedders"]["changed"]
    assert "llm.layers.0.self_attn.qkv_proj" in every and "final_layer.adaLN_modulation.1" in every
    assert "time_token.mlp.0" in every and "t_embedder.mlp.2" in every
    partial = json.loads((tmp_path / "q_and_v_only" / "omnigen" / "adapter_config.json").read_text())
    assert partial["r"] == 3 and set(partial["rank_pattern"].values()) == {6}  # q (3) + v (3) rows, k unadapted
