"""The CLI's wiring to the rooms: exit codes and one-line errors; --family choices and family flags from the family
registry."""

import argparse

import pytest

from omnideft.cli import build_parser
from omnideft.commands.family_options import family_settings
from omnideft.families import registry
from omnideft.families.family import FamilyOption, ModelFamily
from omnideft.shapes.shards import write_task_shards
from tests.helpers import assert_one_line_error, run_cli, run_cli_here


def test_no_command_prints_help_exit_2():
    proc = run_cli()
    assert proc.returncode == 2 and "train" in proc.stdout and "generate" in proc.stdout


def test_check_shards_ok_and_broken(tmp_path):
    split = write_task_shards(tmp_path / "s", ["fill"], n_samples=4, size=32, shard_size=2, n_examples=1)
    ok = run_cli("check-shards", str(split))
    assert ok.returncode == 0, ok.stderr[-2000:]
    shard = sorted(split.glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:-700])  # truncated: checksum and members break
    bad = run_cli("check-shards", str(split))
    assert bad.returncode == 2 and shard.name in bad.stdout + bad.stderr


def test_convert_original_missing_source_is_one_line(tmp_path):
    assert_one_line_error(run_cli("convert-original", str(tmp_path / "nope"), str(tmp_path / "out")), "nope")


# -- the CLI asks the family registry: --family choices and the flags only one family takes ----------------------


class _FlagFamily(ModelFamily):
    """A family that only declares a generation option (nothing loads it here)."""
    title = "Flag Family"
    generate_options = (FamilyOption("swirl", "swirl", 0.5, "how much the sampler swirls", type=float),)


FLAG_FAMILY = _FlagFamily()


@pytest.fixture
def flag_family():
    saved = dict(registry.FAMILIES)
    registry.register_family("flagfamily", f"{__name__}:FLAG_FAMILY")
    yield FLAG_FAMILY
    registry.FAMILIES.clear()
    registry.FAMILIES.update(saved)
    registry.get_family.cache_clear()


def _subcommand(name: str):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_family_choices_come_from_the_registry(flag_family):
    family = next(a for a in _subcommand("generate")._actions if a.dest == "family")
    assert tuple(family.choices) == (registry.AUTO, *registry.family_names())
    assert "flagfamily" in family.choices


def test_a_registered_family_option_is_a_generate_flag_naming_its_family(flag_family):
    assert "--swirl" not in _subcommand("train").format_help()
    help_text = " ".join(_subcommand("generate").format_help().split())
    assert "--swirl SWIRL Flag Family only: how much the sampler swirls (default 0.5)" in help_text
    assert "--scheduler {euler,dpmsolver++} OmniGen2 only: sampler (default euler)" in help_text
    args = _subcommand("generate").parse_args(["--out", "o.png", "--swirl", "0.25", "--cfg-range", "0", "0.5"])
    assert family_settings(args) == {"swirl": 0.25, "cfg_range": (0.0, 0.5)}  # unset ones are absent


def test_a_flag_of_another_family_is_one_line(tmp_path, flag_family):
    out = tmp_path / "o.png"
    base = ("generate", "--model", "tiny", "--prompt", "x", "--steps", "1", "--out", str(out))
    assert_one_line_error(run_cli_here(*base, "--scheduler", "dpmsolver++"),
                          "--scheduler is for OmniGen2 models only", "tiny is OmniGen (v1)")
    assert_one_line_error(run_cli_here(*base, "--family", "omnigen2", "--swirl", "1"),
                          "--swirl is for Flag Family models only", "tiny is OmniGen2")
    assert not out.exists()
