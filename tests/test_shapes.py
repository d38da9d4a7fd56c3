"""The shape world: tasks are deterministic and well formed, every word is known to the small tokenizer, shards
round-trip through the reader, and the task metrics score known images as they must."""

import numpy as np
import pytest
from PIL import Image

from omnideft.data.format.check import check_command
from omnideft.data.indexed import ShardIndex
from omnideft.data.shards import decode_sample
from omnideft.families.omnigen.processor import TAG, OmniGenProcessor, wrap_prompt
from omnideft.model.tokenizer import build_tiny_tokenizer
from omnideft.shapes import (
    BACKGROUND,
    COLOURS,
    TASKS,
    VOCABULARY,
    Scene,
    colour_error,
    make_sample,
    outline,
    render,
    shape_iou,
    task_names,
)
from omnideft.shapes.score import comparison_sheet, heldout_samples, score
from omnideft.shapes.shards import write_task_shards


def test_families_are_disjoint_and_every_task_draws_a_well_formed_sample():
    assert set(task_names("A")) & set(task_names("B")) == set()
    assert {"flip", "fill_like", "grow"} <= set(task_names("B"))
    proc = OmniGenProcessor(build_tiny_tokenizer(extra_words=VOCABULARY), max_image_size=64)
    rng = np.random.default_rng(0)
    for name, task in TASKS.items():
        for n in range(task.min_examples, task.max_examples + 1):
            s = make_sample(name, rng, 64, n)
            assert len(s.images) == 2 * n + len(s.query_images) and s.n_examples == n
            assert s.target.size == (64, 64) and all(im.size == (64, 64) for im in s.images)
            proc.encode(s.instruction, s.images)  # placeholders match the images (raises otherwise)
            assert target_has_shape(s)


def target_has_shape(s) -> bool:
    from omnideft.shapes import target_mask

    return 0.02 < target_mask(s.target, s.kind).mean() < 0.6


def test_samples_are_deterministic_for_a_seed():
    a = make_sample("rotate", np.random.default_rng(7), 64, 2)
    b = make_sample("rotate", np.random.default_rng(7), 64, 2)
    assert a.instruction == b.instruction
    pairs = zip(a.images + [a.target], b.images + [b.target])
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


def test_every_word_of_every_task_is_in_the_small_vocabulary():
    tok = build_tiny_tokenizer(extra_words=VOCABULARY)
    unknown = tok.convert_tokens_to_ids("<unk>")
    rng = np.random.default_rng(1)
    for name in TASKS:
        for _ in range(10):
            s = make_sample(name, rng, 64)
            for chunk in TAG.split(wrap_prompt(s.instruction)):
                ids = tok(chunk).input_ids
                assert unknown not in ids, (chunk, tok.convert_ids_to_tokens(ids))


def test_grow_keeps_shape_colour_and_centre_and_scales_the_area():
    for seed in range(6):
        s = make_sample("grow", np.random.default_rng(seed), 64, 1)
        small, big = shape_mask(s.query_images[0]), shape_mask(s.target)
        assert 1.6 ** 2 * 0.8 < big.sum() / small.sum() < 1.6 ** 2 * 1.2
        centre = [np.argwhere(m).mean(axis=0) for m in (small, big)]
        assert np.abs(centre[0] - centre[1]).max() < 2.5  # same place (triangle centroids move a little)
        assert tuple(np.asarray(s.target)[big][0]) == s.colour == tuple(np.asarray(s.query_images[0])[small][0])
        assert not big.all() and big[[0, -1], :].sum() == 0 and big[:, [0, -1]].sum() == 0  # inside the image
        name = next(n for n, rgb in COLOURS.items() if rgb == s.colour)
        assert s.query_text == f"make the {name} shape in <img><|image_1|></img> big."  # the text names the colour


def test_flip_and_fill_like_do_what_they_say():
    s = make_sample("flip", np.random.default_rng(3), 64, 1)
    assert np.array_equal(np.asarray(s.target), np.asarray(s.query_images[0])[::-1])
    s = make_sample("fill_like", np.random.default_rng(4), 64, 2)
    example_colour = np.asarray(s.examples[0][1])[shape_mask(s.examples[0][1])][0]
    assert tuple(example_colour) == s.colour  # the query's colour is only in the examples' outputs
    assert all(c not in s.instruction for c in COLOURS)


def shape_mask(img):
    from omnideft.shapes import target_mask

    return target_mask(img)


def test_metrics_on_known_images():
    target = render(Scene("square", "blue", 0.5, 0.5, 0.25), 64)
    empty = Image.new("RGB", (64, 64), BACKGROUND)
    assert shape_iou(target, target) == 1.0 and colour_error(target, target, COLOURS["blue"]) == 0.0
    assert shape_iou(empty, target) == 0.0
    assert colour_error(empty, target, COLOURS["blue"]) == pytest.approx(
        np.linalg.norm(np.subtract(BACKGROUND, COLOURS["blue"])))
    shifted = render(Scene("square", "red", 0.5 + 8 / 64, 0.5, 0.25), 64)  # 33 px wide, moved 8 px
    inter, union = 33 * (33 - 8), 33 * (33 + 8)
    assert shape_iou(shifted, target) == pytest.approx(inter / union, abs=0.02)
    shifted_blue = render(Scene("square", "blue", 0.5 + 8 / 64, 0.5, 0.25), 64)
    assert colour_error(shifted_blue, target, COLOURS["blue"]) == 0.0  # a misplaced edge is not a wrong colour
    assert colour_error(shifted, target, COLOURS["blue"]) == pytest.approx(
        np.linalg.norm(np.subtract(COLOURS["red"], COLOURS["blue"])))
    edges = outline(target)
    black = Image.new("RGB", (64, 64), "black")  # an edge map with no edge
    assert shape_iou(edges, edges, "edges") == 1.0 and shape_iou(black, edges, "edges") == 0.0


def test_score_averages_per_task_and_over_tasks():
    samples = heldout_samples(["flip", "edges"], 2, seed=5)
    perfect = {id(s): s.target for s in samples}
    table, images = score(lambda s, i: perfect[id(s)], samples)
    assert table["flip"] == {"iou": 1.0, "colour_error": 0.0, "n": 2} and table["mean"]["iou"] == 1.0
    blank = score(lambda s, i: Image.new("RGB", (64, 64), BACKGROUND), samples)[0]
    assert blank["flip"]["iou"] == 0.0 and blank["mean"]["colour_error"] > 50
    sheet = comparison_sheet(samples, {"generated": images})
    assert sheet.size[1] > 4 * 64 and len(images) == 4


def test_task_shards_round_trip_and_rebuild_byte_identically(tmp_path):
    a = write_task_shards(tmp_path / "a", ["flip", "fill_like"], 6, 32, seed=2, shard_size=4)
    b = write_task_shards(tmp_path / "b", ["flip", "fill_like"], 6, 32, seed=2, shard_size=4)
    tars = sorted(a.glob("*.tar"))
    assert len(tars) == 2 and [t.read_bytes() for t in tars] == [t.read_bytes() for t in sorted(b.glob("*.tar"))]
    assert check_command(tmp_path / "a") == 0
    index = ShardIndex([str(t) for t in tars])
    examples = [decode_sample(index.read(i)) for i in range(len(index))]
    assert [e.task for e in examples[:2]] == ["shapes/b/flip", "shapes/b/fill_like"]
    assert all(len(e.inputs) >= 1 for e in examples) and examples[1].meta["inputs"][0]["role"] == "example_condition"
