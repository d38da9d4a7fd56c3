"""Adapters load whole or not at all: non-finite tensors, tensors for modules the base lacks, tensors missing, and a
base with other weights are refused by generate, export, eval (load_adapter) with one line naming the first key."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from omnideft.adapters import load_adapter
from omnideft.adapters.fingerprint import WEIGHT_TOLERANCE, weights_fingerprint
from omnideft.errors import UserError
from omnideft.families.omnigen.model import load_omnigen
from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def adapter(finished_run):
    return finished_run / "adapter"


def _edited(adapter, dest, edit):
    folder = shutil.copytree(adapter, dest)
    tensors = load_file(folder / "adapter_model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def _first(tensors):
    return sorted(tensors)[0]


def _nan(t):
    t[_first(t)].view(-1)[0] = float("nan")


def _rename_all(t):
    for k in list(t):
        assert ".layers." in k, k
        t[k.replace(".layers.", ".renamed_layers.")] = t.pop(k)


def _drop_first(t):
    del t[_first(t)]


def _generate(folder, tmp_path):
    return run_cli("generate", "--adapter", str(folder), "--prompt", "a red circle", "--out",
                   str(tmp_path / "out.png"), "--steps", "1", "--height", "32", "--width", "32")


@pytest.mark.parametrize("edit, needle", [
    (_nan, "holds non-finite values (tensor"),
    (_rename_all, "has no place in the model"),
    (_drop_first, "is missing"),
])
def test_generate_refuses_an_adapter_that_does_not_load_whole(adapter, tmp_path, edit, needle):
    folder = _edited(adapter, tmp_path / "bad", edit)
    proc = _generate(folder, tmp_path)
    assert_one_line_error(proc, str(folder), needle)
    tensors = load_file(folder / "adapter_model.safetensors")
    if edit is not _nan:  # the message names the first offending key
        expected = sorted(set(tensors) - set(load_file(adapter / "adapter_model.safetensors"))) or \
            [_first(load_file(adapter / "adapter_model.safetensors"))]
        assert f"tensor {expected[0]}" in proc.stderr
    assert not (tmp_path / "out.png").exists()


def test_export_refuses_renamed_keys(adapter, tmp_path):
    folder = _edited(adapter, tmp_path / "bad", _rename_all)
    proc = run_cli("export", str(folder), "--format", "peft-lora", "--out", str(tmp_path / "exported"))
    assert_one_line_error(proc, "has no place in the model", "renamed_layers")
    assert not (tmp_path / "exported").exists()


def test_load_adapter_refuses_a_missing_tensor_and_leaves_the_base_bare(adapter, finished_run, tmp_path):
    """What eval and the demo call: the refused adapter leaves nothing injected."""
    folder = _edited(adapter, tmp_path / "bad", _drop_first)
    transformer = load_omnigen(str(finished_run / "base")).transformer
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    with pytest.raises(UserError, match="is missing"):
        load_adapter(transformer, folder)
    after = transformer.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_a_base_with_other_weights_is_refused_and_bf16_of_the_same_base_is_not(adapter, finished_run):
    with pytest.raises(UserError, match="trained on a base with other weights"):
        load_adapter(load_omnigen("tiny", seed=1).transformer, adapter)  # same shapes, other values
    bf16 = load_omnigen(str(finished_run / "base"), dtype=torch.bfloat16).transformer
    load_adapter(bf16, adapter)


def test_weights_fingerprint_tolerance_sits_between_rounding_and_real_change():
    """The measured numbers behind WEIGHT_TOLERANCE (fingerprint.py): bf16 rounding moves a bucket by ~3e-4,
    scaling every weight by 1.01 moves one by ~1e-2."""
    def worst(a, b):
        return max(abs(x - y) / max(abs(x), abs(y)) for x, y in zip(a, b))

    base = weights_fingerprint(load_omnigen("tiny").transformer)
    rounded = worst(base, weights_fingerprint(load_omnigen("tiny", dtype=torch.bfloat16).transformer))
    scaled_model = load_omnigen("tiny").transformer
    with torch.no_grad():
        for p in scaled_model.parameters():
            p.mul_(1.01)
    scaled = worst(base, weights_fingerprint(scaled_model))
    assert 1e-4 < rounded < WEIGHT_TOLERANCE / 5
    assert 9e-3 < scaled < 1.1e-2 and scaled > 4 * WEIGHT_TOLERANCE


def test_an_adapter_records_the_weights_fingerprint_of_its_base(adapter, finished_run):
    meta = json.loads((adapter / "omnideft.json").read_text())
    have = weights_fingerprint(load_omnigen(str(finished_run / "base")).transformer)
    assert meta["base"]["weights"] == have and len(have) == 16
