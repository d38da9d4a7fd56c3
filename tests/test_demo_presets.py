"""`omnideft demo --family F` asks the family's demo_preset: the settings come from the declaration, and a family
without one (a toy registered here) is refused in one line generated from it."""

import pytest

from omnideft.demo import DEFAULTS, DEMOS, demo_settings, run_family_demo
from omnideft.errors import UserError
from omnideft.families.family import ModelFamily
from omnideft.families.registry import FAMILIES, all_families, get_family, register_family


class NoDemo(ModelFamily):
    title = "No-demo toy"


NO_DEMO = NoDemo()


def test_every_declared_demo_exists_and_the_settings_are_the_declaration():
    for family in all_families():
        if family.demo_preset is not None:
            assert demo_settings(family.name) == family.demo_preset and family.demo_preset["demo"] in DEMOS
    assert DEFAULTS == {k: v for k, v in get_family("omnigen").demo_preset.items() if k != "demo"}


def test_a_family_without_a_demo_and_a_foreign_setting_are_one_line(tmp_path):
    register_family("nodemo", f"{__name__}:NO_DEMO")
    try:
        with pytest.raises(UserError, match="demo --family nodemo: No-demo toy has no demo preset") as err:
            run_family_demo("nodemo", str(tmp_path / "out"))
        assert "\n" not in str(err.value)
    finally:
        del FAMILIES["nodemo"]
        get_family.cache_clear()
    with pytest.raises(UserError, match="its tiny-run demo takes no --queries, --replay"):
        run_family_demo("omnigen2", str(tmp_path / "out"), queries=4, replay=0.1, steps=None)
    assert not (tmp_path / "out").exists()
