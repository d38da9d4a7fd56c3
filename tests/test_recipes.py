"""The shipped recipes and launch files: they load, reference files that exist, launch scripts expand correctly,
the tiny data set matches the code that writes it, and tiny_cpu.yaml trains from any directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from omnideft.errors import UserError
from omnideft.train.recipe import load_recipe
from tests.helpers import REPO, run_cli

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
LAUNCH = REPO / "recipes" / "launch"
# accelerate refuses these next to deepspeed_config_file (they belong in the DeepSpeed JSON)
DS_FILE_CONFLICTS = {"gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                     "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
                     "zero3_save_16bit_model"}


def test_the_issue_recipes_are_here():
    names = {p.name for p in RECIPES}
    assert {"visualcloze_deft_r32.yaml", "insdet_scene_deft.yaml", "dreambooth_deft_r4.yaml", "lora_baseline.yaml",
            "tiny_cpu.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_its_launch_files_exist(path):
    recipe = load_recipe(path)  # unknown keys / wrong types raise UserError
    assert recipe.data.shards, "a recipe names its shards"
    for ref in (recipe.launch.config, recipe.launch.deepspeed):
        if ref:
            assert (REPO / ref).is_file(), f"{path.name}: {ref} missing"
    assert f"`{path.relative_to(REPO)}`" in (REPO / "docs" / "recipes.md").read_text(), "documented"


def test_recipe_with_unknown_key_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "recipes" / "tiny_cpu.yaml").read_text().replace("  rank: 8", "  rnak: 8"))
    with pytest.raises(UserError, match="adapter.rnak"):
        load_recipe(bad)


def test_relative_paths_in_a_recipe_file_fall_back_to_its_folder(tmp_path, monkeypatch):
    (tmp_path / "rec" / "data").mkdir(parents=True)
    (tmp_path / "rec" / "data" / "a-000000.tar").write_bytes(b"")
    (tmp_path / "rec" / "q.png").write_bytes(b"")
    (tmp_path / "cwd" / "data").mkdir(parents=True)
    (tmp_path / "cwd" / "data" / "b-000000.tar").write_bytes(b"")
    (tmp_path / "rec" / "r.yaml").write_text(yaml.safe_dump({
        "data": {"shards": ["data/a-*.tar", {"path": "data/b-*.tar", "weight": 2}, "missing/*.tar"]},
        "validation": {"prompts": [{"prompt": "<img><|image_1|></img>", "images": ["q.png"]}]}}))
    monkeypatch.chdir(tmp_path / "cwd")
    recipe = load_recipe(tmp_path / "rec" / "r.yaml", ["validation.every=1"])
    shards = recipe.data.shards
    assert shards[0] == str(tmp_path / "rec" / "data" / "a-*.tar")  # only next to the recipe
    assert shards[1] == {"path": "data/b-*.tar", "weight": 2}  # matches from the cwd: unchanged
    assert shards[2] == "missing/*.tar"  # matches nowhere: left as written, so the error names it
    assert recipe.validation.prompts[0]["images"] == [str(tmp_path / "rec" / "q.png")]
    override = load_recipe(tmp_path / "rec" / "r.yaml", ["data.shards=[data/a-*.tar]"])
    assert override.data.shards == ["data/a-*.tar"]  # command-line values are cwd-relative, never rewritten
    single = load_recipe(tmp_path / "rec" / "r.yaml", ["data.shards=out/train"])
    assert single.data.shards == ["out/train"]  # one path on the command line is a one-element list
    assert load_recipe(None, ["data.shards=*.tar"]).data.shards == ["*.tar"]


@pytest.mark.parametrize("path", sorted(LAUNCH.glob("*.yaml")), ids=lambda p: p.name)
def test_launch_yaml_is_a_valid_accelerate_config(path):
    raw = yaml.safe_load(path.read_text())
    cfg = ClusterConfig.from_yaml_file(path)  # accelerate's own loader: unknown keys raise
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1
    ds = raw.get("deepspeed_config") or {}
    if ds.get("deepspeed_config_file"):
        assert (REPO / ds["deepspeed_config_file"]).is_file(), ds["deepspeed_config_file"]
        assert not DS_FILE_CONFLICTS & set(ds), f"{path.name}: move {DS_FILE_CONFLICTS & set(ds)} into the JSON"
        assert "mixed_precision" not in raw, f"{path.name}: mixed precision comes from the DeepSpeed JSON"
    if ds.get("deepspeed_hostfile"):
        host = REPO / ds["deepspeed_hostfile"]
        assert host.is_file() or host.with_name(host.name + ".example").is_file(), host


@pytest.mark.parametrize("path", sorted(LAUNCH.glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_json_parses(path):
    assert isinstance(json.loads(path.read_text()), dict)


def test_launch_files_of_the_issue_exist():
    for name in ("one_gpu.yaml", "node_8gpu_zero2.yaml", "multinode_hostfile.yaml", "hostfile.example",
                 "torchrun_c10d.sh", "slurm_multinode.sbatch", "ds_zero2.json"):
        assert (LAUNCH / name).is_file(), name


def test_hostfile_example_matches_the_multinode_config():
    from deepspeed.launcher.runner import _parse_hostfile

    hosts = _parse_hostfile((LAUNCH / "hostfile.example").read_text().splitlines())
    cfg = yaml.safe_load((LAUNCH / "multinode_hostfile.yaml").read_text())
    assert len(hosts) == cfg["num_machines"] and sum(hosts.values()) == cfg["num_processes"]
    assert cfg["main_process_ip"] == next(iter(hosts))
    assert cfg["deepspeed_config"]["deepspeed_multinode_launcher"] == "pdsh"


@pytest.mark.parametrize("name", ["torchrun_c10d.sh", "slurm_multinode.sbatch"])
def test_shell_scripts_parse(name):
    proc = subprocess.run(["bash", "-n", str(LAUNCH / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _stub_bin(tmp_path: Path) -> dict:
    """Fake scontrol/srun/accelerate/torchrun: srun runs its command once per node with that node's SLURM_NODEID,
    the launchers print their arguments one per <...>, so the test sees what each node would execute."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "scontrol": 'printf "node-a\\nnode-b\\n"',
        "srun": 'while [[ "$1" == --* ]]; do shift; done\n'
                'for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@"; done',
        "accelerate": 'printf "<%s>" "$@"; echo',
        "torchrun": 'printf "<%s>" "$@"; echo',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return dict(env, PATH=f"{bin_dir}:{env['PATH']}")


def test_sbatch_gives_every_node_its_own_rank(tmp_path):
    text = (LAUNCH / "slurm_multinode.sbatch").read_text()
    launch = text[text.index('LAUNCH="'):text.index('--resume latest"')]
    assert "\\$SLURM_NODEID" in launch and not re.search(r"(?<!\\)\$SLURM_NODEID", launch)
    env = dict(_stub_bin(tmp_path), SLURM_JOB_NODELIST="node-[a-b]", SLURM_NNODES="2", SLURM_SUBMIT_DIR=str(REPO),
               GPUS_PER_NODE="4", SLURM_NODEID="0")  # the batch host's own id must not leak into the tasks
    proc = subprocess.run(["bash", str(LAUNCH / "slurm_multinode.sbatch"), "recipes/tiny_cpu.yaml",
                           "data.shards=[a b]"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert f"<--machine_rank><{rank}>" in line, line
        for part in ("<--num_processes><8>", "<--num_machines><2>", "<--rdzv_backend><c10d>",
                     "<--main_process_ip><node-a>", "<-m><omnideft><train><recipes/tiny_cpu.yaml>",
                     "<data.shards=[a b]>", "<--config_file><recipes/launch/node_8gpu_zero2.yaml>"):
            assert part in line, (part, line)


def test_sbatch_survives_a_host_list_longer_than_a_pipe_buffer(tmp_path):
    """`scontrol show hostnames | head -n 1` under `set -euo pipefail` aborts the job whenever scontrol is still
    writing when head exits (SIGPIPE, exit 141): 53 of 300 real runs. A host list larger than a pipe buffer (64 KiB)
    makes that certain, so this test fails every time on the `head` form - checked on a copy of the script - and
    passes on the shipped one."""
    env = dict(_stub_bin(tmp_path), SLURM_JOB_NODELIST="node-[0-9999]", SLURM_NNODES="2",
               SLURM_SUBMIT_DIR=str(REPO), GPUS_PER_NODE="1")
    (tmp_path / "bin" / "scontrol").write_text('#!/bin/bash\necho node-a\nfor ((i = 0; i < 20000; i++)); do '
                                               'echo "node-$i"; done\n')
    script = (LAUNCH / "slurm_multinode.sbatch").read_text()
    shipped = subprocess.run(["bash", str(LAUNCH / "slurm_multinode.sbatch"), "recipes/tiny_cpu.yaml"],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    assert shipped.returncode == 0, shipped.stderr
    assert "head node-a:29500" in shipped.stderr and "<--main_process_ip><node-a>" in shipped.stdout
    assert not re.search(r"\|\s*head\b", script), "a pipe into head dies of SIGPIPE under pipefail"
    with_head = tmp_path / "with_head.sbatch"
    with_head.write_text(re.sub(r"\|\s*sed -n 1p", "| head -n 1", script))
    assert "| head -n 1" in with_head.read_text()
    broken = subprocess.run(["bash", str(with_head), "recipes/tiny_cpu.yaml"], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert broken.returncode == 141 and broken.stdout == ""  # 128 + SIGPIPE: the job never launched


def test_torchrun_script_uses_c10d_rendezvous(tmp_path):
    env = dict(_stub_bin(tmp_path), HEAD="node-a", NNODES="3", GPUS="2")
    proc = subprocess.run(["bash", str(LAUNCH / "torchrun_c10d.sh"), "recipes/tiny_cpu.yaml", "train.lr=1e-3"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for part in ("<--nnodes=3>", "<--nproc-per-node=2>", "<--rdzv-backend=c10d>", "<--rdzv-endpoint=node-a:29500>",
                 "<-m><omnideft><train><recipes/tiny_cpu.yaml>", "<launch.deepspeed=recipes/launch/ds_zero2.json>",
                 "<train.lr=1e-3>"):
        assert part in proc.stdout, (part, proc.stdout)
    no_head = subprocess.run(["bash", str(LAUNCH / "torchrun_c10d.sh"), "r.yaml"], capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != "HEAD"})
    assert no_head.returncode != 0 and "HEAD" in no_head.stderr


def test_shipped_tiny_shards_are_what_the_script_writes(tmp_path):
    shipped = REPO / "recipes" / "data" / "tiny_shapes"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_tiny_shards.py"), str(tmp_path / "t")],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*") if p.is_file())
    assert sum((shipped / f).stat().st_size for f in files) < 600_000
    for f in files:
        a, b = (shipped / f).read_bytes(), (tmp_path / "t" / f).read_bytes()
        if f.name == "manifest.json":  # the creation time is the one field allowed to differ
            a, b = ({k: v for k, v in json.loads(x).items() if k != "created"} for x in (a, b))
        assert a == b, f"{f} differs: run `python scripts/make_tiny_shards.py` and commit"
    instruction = (shipped / "prompt" / "instruction.txt").read_text().strip()
    assert load_recipe(REPO / "recipes" / "tiny_cpu.yaml").validation.prompts[0]["prompt"] == instruction


def _check_tiny_run(out: Path) -> None:
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["skipped_samples"] == {}
    assert sum(summary["drawn_per_source"].values()) == 3 * 4
    assert (out / "validation" / "step-0000003.png").is_file()


def test_tiny_cpu_trains_from_the_repo_root(tmp_path):
    proc = run_cli("train", "recipes/tiny_cpu.yaml", "train.max_steps=3", f"output.dir={tmp_path / 'run'}",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_tiny_run(tmp_path / "run")


def test_tiny_cpu_trains_from_another_directory(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "omnideft", "train", str(REPO / "recipes" / "tiny_cpu.yaml"),
                           "train.max_steps=3", "--no-progress"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_tiny_run(tmp_path / "runs" / "tiny_cpu")  # output.dir stays relative to the cwd
