"""Docs and recipes stay in sync with the code."""

from pathlib import Path

import pytest

from omnideft.train.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_generated_docs_are_current(monkeypatch):
    import importlib.util

    from omnideft.families import registry

    # the docs list the families omnideft ships, not the toy family the tests register
    monkeypatch.setattr(registry, "FAMILIES", dict(registry.BUILT_IN))
    registry.get_family.cache_clear()

    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for rel, parts in gen.TARGETS.items():
        path = REPO / rel
        for marker, fn in parts:
            assert path.read_text() == gen.splice(path, fn(), marker), f"{rel} is stale: run python scripts/gen_docs.py"


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_validates(recipe):
    load_recipe(recipe)


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes" / "pretrain").glob("*.yaml")), ids=lambda p: p.name)
def test_every_pretraining_recipe_validates(recipe):
    from omnideft.families.omnigen.pretrain.recipe import load_pretrain_recipe

    load_pretrain_recipe(recipe)


def test_ci_runs_readme_test_command():
    assert "bash scripts/test.sh" in (REPO / "README.md").read_text()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
