"""omnideft.generate.Generator, the generation API of the CLI and the studio: adapters swapped without reloading
the base give what a fresh load gives, image k of n is seed + k, output sizes, and the CLI on top of it."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnideft.cli import main as cli_main
from omnideft.errors import UserError
from omnideft.families.generator import FamilyGenerator as Generator
from omnideft.families.omnigen.model import load_omnigen, save_base
from omnideft.families.registry import get_family
from tests.studio_world import random_adapter, random_image

KW = dict(steps=2, height=32, width=32, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("generator")
    save_base(load_omnigen("tiny"), root / "base")
    base = str(root / "base")
    return {"base": base, "a": random_adapter(root / "a", base, method="lora", seed=1),
            "b": random_adapter(root / "b", base, method="deft", seed=2),
            "camera": random_adapter(root / "camera", base, camera=True, seed=3)}


def _pixels(images):
    return [np.asarray(im) for im in images]


def test_swapping_adapters_equals_fresh_loads_and_restores_the_base(world):
    a, b = str(world["a"]), str(world["b"])
    query, pairs = [random_image(32, 32, 0)], [(random_image(32, 32, 1), random_image(32, 32, 2))]
    fresh = {}
    for name, adapters in {"none": [], "a": [a], "mix": [f"{a}:0.5", (b, 0.7)]}.items():
        fresh[name] = _pixels(Generator.from_pretrained(world["base"], adapters)("x", query, pairs, **KW))
    assert not np.array_equal(fresh["none"][0], fresh["a"][0])
    assert not np.array_equal(fresh["a"][0], fresh["mix"][0])

    g = Generator.from_pretrained(world["base"])
    base_state = {k: v.clone() for k, v in g.transformer.state_dict().items()}
    for name, adapters in [("a", [a]), ("mix", [(a, 0.5), (b, 0.7)]), ("a", [(a, 1.0)]), ("mix", [(a, 0.5), (b, 0.7)]),
                           ("none", [])]:
        g.set_adapters(adapters)
        assert all(np.array_equal(x, y) for x, y in zip(_pixels(g("x", query, pairs, **KW)), fresh[name])), name
    after = g.transformer.state_dict()
    assert set(after) == set(base_state)
    assert all(torch.equal(after[k], base_state[k]) for k in base_state)  # merges undone exactly


def test_adapter_weights_scale_each_delta(world):
    """`--adapter a:0.5 --adapter b:0.7` folds exactly W + 0.5 dA + 0.7 dB into the base (a generator that ignored the
    weights would still differ from a single adapter, which is all the swap test above can see)."""
    from omnideft.adapters import load_adapter
    from omnideft.adapters.export import adapter_deltas

    def dense(folder):
        return {n: d[0] @ d[1] if isinstance(d, tuple) else d
                for n, d in adapter_deltas(load_adapter(load_omnigen(world["base"]).transformer, folder)).items()}

    da, db = dense(world["a"]), dense(world["b"])
    base = dict(load_omnigen(world["base"]).transformer.named_modules())
    g = Generator.from_pretrained(world["base"], [(str(world["a"]), 0.5), (str(world["b"]), 0.7)])
    merged = dict(g.transformer.named_modules())
    for name in ("layers.0.self_attn.to_q", "layers.1.mlp.down_proj"):
        w0 = base[name].weight.detach()
        want = w0 + 0.5 * da[name] + 0.7 * db[name]
        got = merged[name].weight.detach().cpu()
        unweighted = w0 + da[name] + db[name]
        assert (want - unweighted).abs().max() > 1e-2  # the weights matter at this scale
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * want.abs().max().item())


def test_a_camera_adapter_swapped_in_and_out_equals_fresh_loads(world):
    camera, a = str(world["camera"]), str(world["a"])
    view = [0.9, 0.5, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    fresh_camera = Generator.from_pretrained(world["base"], [camera])("a cube", camera=view, **KW)[0]
    fresh_a = Generator.from_pretrained(world["base"], [a])("a cube", camera=view, **KW)[0]
    g = Generator.from_pretrained(world["base"])
    for adapters, want in [([camera], fresh_camera), ([a], fresh_a), ([camera], fresh_camera)]:
        g.set_adapters(adapters)
        assert np.array_equal(np.asarray(g("a cube", camera=view, **KW)[0]), np.asarray(want))
    assert g.camera_prompt.encoding == "learned"
    g.set_adapters([a])
    assert g.camera_prompt.encoding == "text" and not hasattr(g.transformer, "camera_conditioning")


def test_image_k_of_n_is_seed_plus_k(world):
    g = Generator.from_pretrained(world["base"], [world["a"]])
    steps = []
    several = g("a dog", n=3, on_step=lambda done, total: steps.append((done, total)), **KW)
    singles = [g("a dog", **dict(KW, seed=KW["seed"] + k))[0] for k in range(3)]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(several, singles))
    assert not np.array_equal(np.asarray(several[0]), np.asarray(several[1]))
    assert steps == [(i, 6) for i in range(1, 7)]


def test_output_size_follows_the_query_and_is_checked():
    g = get_family("omnigen").generator(load_omnigen("tiny"))
    example = (random_image(64, 48, 0), random_image(64, 48, 1))
    assert g.output_size([random_image(40, 24, 2)]) == (16, 32)  # rounded down to the 16-px grid
    assert g.output_size([random_image(200, 100, 2)], max_input_image_size=64) == (32, 64)
    assert g.output_size([], 48, 80) == (48, 80)
    assert g.max_side() == 512
    with pytest.raises(UserError, match="at most 512 px"):
        g.output_size([], 1024, 64)
    with pytest.raises(UserError, match="height 8 is below"):
        g.output_size([], 8, 64)
    image = g("x", [random_image(32, 16, 3)], [example], steps=1)[0]
    assert image.size == (32, 16)  # the query's size, not the first example's


def test_cli_default_size_is_the_query_and_too_big_is_one_line(tmp_path, capsys):
    paths = {}
    for i, (name, size) in enumerate({"ex_in": (48, 48), "ex_out": (48, 48), "q": (32, 16)}.items()):
        paths[name] = tmp_path / f"{name}.png"
        random_image(*size, i).save(paths[name])
    out = tmp_path / "o.png"
    common = ["generate", "--model", "tiny", "--prompt", "x", "--image", str(paths["q"]), "--steps", "1",
              "--example", f"{paths['ex_in']}={paths['ex_out']}", "--out", str(out)]
    assert cli_main(common) == 0
    assert Image.open(out).size == (32, 16)
    out.unlink()
    assert cli_main(common + ["--height", "2048"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "height 2048 is more than this model can do" in err[0]
    assert not out.exists()
