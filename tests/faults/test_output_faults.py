"""Outputs never replace what a verb did not write (docs/reliability.md): an `--out` that holds other files, that
is (or holds, or lies inside) the adapter or base being read, that is a file where a folder goes, or that cannot
be written is one line naming it, before any work, and nothing there changes. A DeepSpeed checkpoint carrying a
pickled payload is refused without running it."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from omnideft.adapters import AdapterSpec, apply_adapter, save_adapter
from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen
from omnideft.families.omnigen.targets import target_modules as omnigen_targets
from omnideft.files import OWNER_FILE, write_text_atomic
from omnideft.train.engine import load_deepspeed_state
from tests.faults.conftest import train_cli
from tests.helpers import REPO, assert_one_line_error, run_cli_here

PRETRAIN_RECIPE = "recipes/pretrain/small_base.yaml"
RESUME_ZERO2 = ["--resume=latest", "train.max_steps=2", "launch.deepspeed=recipes/launch/ds_zero2.json"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A small DEFT adapter on the tiny base."""
    torch.manual_seed(0)
    model = apply_adapter(load_omnigen("tiny").transformer, AdapterSpec(rank=2, targets="attn", init="paper"),
                          targets=omnigen_targets)
    return save_adapter(model, tmp_path_factory.mktemp("adapter") / "a", base_name="tiny")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_merged_export_and_pretrain_never_replace_a_folder_of_other_files(adapter, tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("mine")
    before = snapshot(out)
    proc = run_cli_here("export", str(adapter), "--format", "merged", "--base", "tiny", "--out", str(out))
    assert_one_line_error(proc, str(out), "files omnideft did not write", "name a new or empty folder")
    proc = run_cli_here("pretrain", PRETRAIN_RECIPE, "--out", str(out))  # refused before any training
    assert_one_line_error(proc, str(out), "files omnideft did not write")
    assert snapshot(out) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_merged_export_replaces_its_own_earlier_output_and_nothing_else(adapter, tmp_path):
    merged = tmp_path / "merged"
    for _ in range(2):  # the rerun replaces the first export: recorded as this verb's own output
        proc = run_cli_here("export", str(adapter), "--format", "merged", "--base", "tiny", "--out", str(merged))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((merged / OWNER_FILE).read_text()) == {"written_by": "omnideft export --format merged"}
    assert (merged / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    proc = run_cli_here("pretrain", PRETRAIN_RECIPE, "--out", str(merged))  # another verb's output
    assert_one_line_error(proc, str(merged), "holds the output of `omnideft export --format merged`")


def test_lora_exports_replace_only_their_own_files(adapter, tmp_path):
    other = tmp_path / "other-adapter"  # another adapter: its adapter_model.safetensors is not an export's
    shutil.copytree(adapter, other)
    before = snapshot(other)
    proc = run_cli_here("export", str(adapter), "--format", "peft-lora", "--base", "tiny", "--out", str(other))
    assert_one_line_error(proc, f"--out {other} holds adapter_model.safetensors / adapter_config.json that export "
                                "did not write")
    assert snapshot(other) == before
    for _ in range(2):  # a rerun replaces the earlier export's files
        proc = run_cli_here("export", str(adapter), "--format", "peft-lora", "--base", "tiny", "--out",
                            str(tmp_path / "lora"))
        assert proc.returncode == 0, proc.stderr[-2000:]


def _spellings(adapter: Path, base: Path, link: Path) -> list[tuple[str, str, str]]:
    """(format, --out, culprit) for every way --out can meet an input: itself, relative, through a symlink, a
    folder or file inside it, a folder around it (merged replaces --out whole), the base folder."""
    rel = os.path.relpath(adapter, REPO)  # the CLI runs in the repo
    return [("merged", str(adapter), "inside the adapter folder"), ("merged", rel, "inside the adapter folder"),
            ("merged", str(link), "inside the adapter folder"), ("peft-lora", str(adapter), "inside the adapter"),
            ("kohya", f"{link}/lora", "inside the adapter folder"), ("diffusers", f"{rel}/.", "inside the adapter"),
            ("merged", str(adapter.parent), "holds the adapter folder"), ("merged", str(base), "inside the base"),
            ("comfyui", str(base / "transformer"), "inside the base model folder")]


def test_export_never_writes_into_the_adapter_or_base_it_reads(adapter, tmp_path):
    base = tmp_path / "base"
    (base / "transformer").mkdir(parents=True)
    (base / "transformer" / "config.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(adapter)
    before = snapshot(adapter.parent), snapshot(base)
    for fmt, out, needle in _spellings(adapter, base, link):
        proc = run_cli_here("export", str(adapter), "--format", fmt, "--base", str(base), "--out", out)
        assert_one_line_error(proc, f"--out {Path(out)}", needle, "name another folder")
    assert (snapshot(adapter.parent), snapshot(base)) == before


def test_a_file_where_a_folder_goes_is_one_line_naming_it(adapter, tmp_path):
    """A file given as an output folder, a file in the way of one, an output file that is a folder: one line each
    (these tracebacked before), and the file or folder is unchanged."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    images = _image_folders(tmp_path)
    (tmp_path / "table.csv").mkdir()
    cases = [
        (["export", str(adapter), "--format", "merged", "--base", "tiny", "--out", str(blocker)], "is a file"),
        (["export", str(adapter), "--format", "peft-lora", "--base", "tiny", "--out", str(blocker)], "is a file"),
        (["pretrain", PRETRAIN_RECIPE, "--out", str(blocker)], "is a file, not a folder"),
        (["pretrain", PRETRAIN_RECIPE, "--out", f"{blocker}/sub"], "is a file, not a folder"),
        (["eval", "--model", "tiny", "--shards", "none", "--out", f"{blocker}/scores"], "is a file, not a folder"),
        # folder scoring makes its --out with mkdir: the CLI's last guard turns the OSError into one line
        (["eval", *images, "--metrics", "ssim", "--out", str(blocker)], "a file stands"),
    ]
    for args, needle in cases:
        assert_one_line_error(run_cli_here(*args), str(blocker), needle)
    with pytest.raises(UserError, match="table.csv is a folder, not a file"):
        write_text_atomic(tmp_path / "table.csv", "x")
    assert blocker.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["file.txt", "pred", "ref", "table.csv"]


def _image_folders(root: Path) -> list[str]:
    """--pred and --ref folders of one image each: what folder scoring needs before it makes its --out."""
    for name in ("pred", "ref"):
        (root / name).mkdir()
        Image.new("RGB", (16, 16), "red").save(root / name / "a.png")
    return ["--pred", str(root / "pred"), "--ref", str(root / "ref")]


def test_a_folder_this_user_cannot_write_is_one_line(adapter):
    """Tests run as root, whom a 0o555 mode does not stop. The process's effective user is switched to `nobody`
    (seteuid, restored after) so the kernel really refuses the write: this proves both the check before the work
    (asked with the effective user, as the kernel decides) and the conversion of a real EACCES into one line.
    `nobody` may not read the clone (a checkout under a 0700 folder), so each command first runs as root on an --out
    under a file (refused as well, after the same imports), from a folder `nobody` may enter."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        (root / "ro").mkdir(mode=0o555)
        (root / "file").write_text("")
        recipe = shutil.copy(REPO / PRETRAIN_RECIPE, root / "recipe.yaml")
        folders = _image_folders(root)

        def cases(parent: Path):
            return [
                (["export", str(adapter), "--format", "merged", "--base", "tiny", "--out", str(parent / "m")],
                 "not writable (permission denied)"),
                (["pretrain", str(recipe), "--out", str(parent / "p")], "not writable (permission denied)"),
                # folder scoring makes its --out itself: the kernel's EACCES reaches the CLI's last guard
                (["eval", *folders, "--metrics", "ssim", "--out", str(parent / "e")],
                 "Permission denied"),
            ]

        before = os.getcwd()
        os.chdir(root)
        try:
            for args, _ in cases(root / "file"):
                assert_one_line_error(run_cli_here(*args, cwd=None), str(root / "file"))
            os.seteuid(65534)
            try:
                procs = [run_cli_here(*args, cwd=None) for args, _ in cases(root / "ro")]
                with pytest.raises(UserError, match=r"cannot create .*ro/x\.txt: .*ro is not writable"):
                    write_text_atomic(root / "ro" / "x.txt", "x")  # every atomic write checks it too
            finally:
                os.seteuid(0)
        finally:
            os.chdir(before)
        for proc, (_, needle) in zip(procs, cases(root / "ro")):
            assert_one_line_error(proc, str(root / "ro"), needle)
        assert os.listdir(root / "ro") == []


class Payload:
    """A pickle that runs code when loaded: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_in_a_deepspeed_checkpoint_never_runs(fault_shards, tmp_path):
    """A real 2-step ZeRO-2 run (one process, gloo); its model-states file gets a payload and its recorded sha256
    is updated, so the sums verify. `--resume latest` refuses it in one line naming the file (it was the only
    checkpoint); the payload never runs. Before, DeepSpeed's own unrestricted unpickling ran it."""
    run = tmp_path / "run"
    proc = train_cli(fault_shards, run, *RESUME_ZERO2[1:], env={"DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = run / "checkpoints" / "step-0000002"
    name = "trainer/deepspeed/state/mp_rank_00_model_states.pt"
    legit = load_deepspeed_state(checkpoint / name)  # DeepSpeed's own state loads weights-only
    assert "module" in legit
    marker = tmp_path / "payload-ran"
    torch.save({**legit, "payload": Payload(marker)}, checkpoint / name)
    state = json.loads((checkpoint / "trainer" / "state.json").read_text())
    state["files"][name] = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
    (checkpoint / "trainer" / "state.json").write_text(json.dumps(state))
    adapter_before = snapshot(run / "adapter")

    proc = train_cli(fault_shards, run, *RESUME_ZERO2, env={"DS_ACCELERATOR": "cpu"})  # the user's command
    assert_one_line_error(proc, f"{checkpoint / name} holds a pickled object", "io.open")
    with pytest.raises(UserError, match="not DeepSpeed training state"):
        load_deepspeed_state(checkpoint / name)  # the loader the engine reads every state file with on resume
    assert not marker.exists()
    assert snapshot(run / "adapter") == adapter_before
