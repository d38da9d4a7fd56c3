"""The studio's state and actions without a browser (test_studio_browser.py drives the page): adapter discovery and
base checks, generations equal to their reported `omnideft generate` command lines, presets, orbits, bad input."""

import shlex

import numpy as np
import pytest
from PIL import Image

from omnideft.camera.record import record_vector
from omnideft.cli import main as cli_main
from omnideft.data.indexed import ShardIndex
from omnideft.data.shards import decode_sample
from omnideft.data.sources import resolve_sources
from omnideft.errors import UserError
from omnideft.prompts.in_context import compose_in_context
from omnideft.studio.catalog import camera_string
from omnideft.studio.history import history_markdown
from omnideft.studio.presets import split_in_context
from omnideft.studio.session import Request, Studio, describe_error
from tests.helpers import assert_one_line_error, run_cli

SHAPES = "shapes/a/fill"


@pytest.fixture(scope="module")
def studio(studio_world, tmp_path_factory):
    w = studio_world
    roots = [str(w["a"].parent.parent), str(w["other"].parent), str(w["camera"]), str(w["empty"]), "no/such/dir"]
    return Studio(str(w["base"]), roots, [str(w["heldout"]), str(w["sfm"])],
                  outputs=str(tmp_path_factory.mktemp("studio_out")))


def _index(studio, label):
    return next(i for i, a in enumerate(studio.adapters) if a.label == label)


def _run_command(line: str, out) -> np.ndarray:
    argv = shlex.split(line)
    assert argv[:2] == ["omnideft", "generate"]
    argv = argv[1:]
    argv[argv.index("--out") + 1] = str(out)
    assert cli_main(argv) == 0
    return np.asarray(Image.open(out))


def test_adapters_are_found_described_and_checked_against_the_base(studio, studio_world):
    labels = [a.label for a in studio.adapters]
    assert {"runs/a/adapter", "runs/b/adapter", "other/adapter", "cameras/adapter"} <= set(labels)
    a = studio.adapters[_index(studio, "runs/a/adapter")]
    assert (a.method, a.rank, a.step, a.usable) == ("deft", 4, 2, True)
    assert a.summary().startswith("deft · rank 4 · step 2 · base ")
    other = studio.adapters[_index(studio, "other/adapter")]
    assert not other.usable and other.problem.startswith("trained on another base")
    assert studio.generator.fingerprint in other.problem and other.fingerprint in other.problem
    camera = studio.adapters[_index(studio, "cameras/adapter")]
    assert camera.camera == "learned" and camera.usable and camera.note is None
    b = studio.adapters[_index(studio, "runs/b/adapter")]  # the same tiny weights, saved by another run
    assert b.usable and b.note == f"trained on {studio_world['b'].parent / 'base'}; this model is " \
        f"{studio_world['base']} (same shape)"
    assert any(m.startswith("adapters: no adapter folder under") and str(studio_world["empty"]) in m
               for m in studio.messages)
    assert "adapters: no/such/dir does not exist" in studio.messages
    with pytest.raises(UserError, match="trained on another base"):
        studio.settings(Request("x", adapters=[(_index(studio, "other/adapter"), 1.0)]))


def test_generations_equal_their_command_lines(studio, studio_world, tmp_path):
    w = studio_world
    req = Request("draw <img><|image_1|></img> like <img><|image_2|></img>", query=str(w["query"]),
                  inputs=[str(w["more"])], examples=[(str(w["ex_in"]), str(w["ex_out"])), (None, None)],
                  adapters=[(_index(studio, "runs/b/adapter"), 0.7), (_index(studio, "runs/a/adapter"), 0.5)],
                  negative_prompt="blurry", seed=11, n=2, steps=2, guidance=3.0, image_guidance=1.3)
    entry = studio.generate(req)
    assert [p.name for p in entry.outputs] == [f"studio-{entry.number:04d}-1.png", f"studio-{entry.number:04d}-2.png"]
    assert (entry.settings.height, entry.settings.width) == (32, 32)  # same as the query
    lines = entry.command_lines()
    assert len(lines) == 2 and "--seed 11" in lines[0] and "--seed 12" in lines[1]
    assert "--negative-prompt blurry" in lines[0] and ":0.7" in lines[0] and ":0.5" in lines[0]
    for k, line in enumerate(lines):
        cli = _run_command(line, tmp_path / f"cli{k}.png")
        assert np.array_equal(cli, np.asarray(Image.open(entry.outputs[k])))
    assert not np.array_equal(np.asarray(Image.open(entry.outputs[0])), np.asarray(Image.open(entry.outputs[1])))
    table = history_markdown(studio.history)
    assert f"| {entry.number} | draw &lt;img&gt;" in table and "11–12" in table


def test_bad_requests_are_one_line_messages(studio, studio_world):
    w = studio_world
    cases = [
        (Request("x <img><|image_3|></img>", query=str(w["query"]), steps=1), "<|image_3|>"),
        # (a query bigger than the model's range is resized to fit: tests/test_generate_jobs.py)
        (Request("x", query=str(w["big"]), same_as_query=False, height=1024, width=1024, steps=1),
         "more than this model can do"),
        (Request("x", query=str(w["query"]), examples=[(str(w["ex_in"]), None)], steps=1), "example 1 needs both"),
        (Request("", steps=1), "write a prompt"),
        (Request("x", query=str(w["query"]), camera="1,2", steps=1), "has 2 numbers"),
    ]
    for req, needle in cases:
        with pytest.raises(Exception) as info:
            studio.generate(req)
        line = describe_error(info.value)
        assert needle in line and "\n" not in line, (needle, line)
    assert describe_error(RuntimeError("shape mismatch\nmore")) == "generation failed: RuntimeError: shape mismatch"


def test_a_wrong_model_path_still_starts_and_says_why(studio_world, tmp_path):
    bad = Studio(str(tmp_path / "no_model"), [str(studio_world["empty"])], [str(tmp_path / "no_shards")],
                 outputs=str(tmp_path / "out"))
    assert bad.generator is None
    assert bad.messages[0].startswith(f"model {tmp_path / 'no_model'} could not be loaded")
    assert any("no adapter folder under" in m for m in bad.messages)
    assert any(m.startswith("examples: shard glob") for m in bad.messages)
    with pytest.raises(UserError, match="no model is loaded"):
        bad.generate(Request("a cat"))


def test_presets_recompose_the_held_out_instruction(studio, studio_world):
    assert studio.catalog.tasks == ["sfm/novel_view", SHAPES]  # sorted
    first, second = studio.preset(SHAPES), studio.preset(SHAPES)
    assert first.key != second.key
    index = ShardIndex(resolve_sources([str(studio_world["heldout"])])[0].urls)
    sample = next(decode_sample(index.read(i)) for i in range(len(index)) if index.samples[i].key == first.key)
    assert len(first.examples) == 1 and len(first.images) == 1 and first.prompt.startswith("fill the edges ")
    query = [Image.open(p) for p in first.images]
    pairs = [(Image.open(a), Image.open(b)) for a, b in first.examples]
    assert compose_in_context(first.prompt, query, pairs)[0] == sample.instruction
    assert np.array_equal(np.asarray(Image.open(first.target)), np.asarray(sample.output))
    assert np.array_equal(np.asarray(query[0]), np.asarray(sample.inputs[-1]))

    view = studio.preset("sfm/novel_view")  # another layout: kept verbatim, its camera in the camera box
    assert view.examples == [] and len(view.images) == 1 and "<|image_1|>" in view.prompt
    assert view.camera is not None and len(view.camera.split(",")) == 11


def test_split_in_context_keeps_other_layouts_verbatim():
    roles = ["example_condition", "example_output", "query_condition"]
    text = "In each row: <img><|image_1|></img> then <img><|image_2|></img>. Query <img><|image_3|></img>"
    assert split_in_context(text, ["a", "b", "q"], roles) == (text, [], ["a", "b", "q"])
    ours = "example 1: <img><|image_1|></img> becomes <img><|image_2|></img>. draw <img><|image_3|></img>"
    assert split_in_context(ours, ["a", "b", "q"], roles) == ("draw <img><|image_1|></img>", [("a", "b")], ["q"])


def test_orbit_between_two_views_equals_the_cli(studio, studio_world, tmp_path):
    views = studio.views
    assert {"view_000.png", "view_001.png", "view_002.png"} <= set(views)
    index = ShardIndex(resolve_sources([str(studio_world["sfm"])])[0].urls)
    records = [decode_sample(index.read(i)).camera for i in range(len(index))]
    assert views["view_001.png"] in {camera_string(record_vector(r)) for r in records}
    camera = _index(studio, "cameras/adapter")
    req = Request("a cube", query=str(studio_world["query"]), adapters=[(_index(studio, "runs/a/adapter"), 0.5),
                                                                       (camera, 1.0)], steps=2, seed=4)
    entry = studio.orbit(req, views["view_000.png"], views["view_002.png"], frames=3, fps=4)
    gif, strip = entry.outputs
    assert gif.suffix == ".gif" and Image.open(strip).size == (3 * 32, 32)
    (line,) = entry.command_lines()
    assert line.index("cameras/adapter:1.0") < line.index("runs/a/adapter:0.5")  # the camera adapter goes first
    _run_command(line, tmp_path / "orbit.gif")
    ours = sorted(gif.parent.glob(f"{gif.stem}_frames/*.png"))
    theirs = sorted((tmp_path / "orbit_frames").glob("*.png"))
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert not np.array_equal(np.asarray(Image.open(ours[0])), np.asarray(Image.open(ours[-1])))


def test_studio_without_gradio_says_how_to_install_it(tmp_path):
    from tests.helpers import REPO

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "gradio.py").write_text("raise ImportError('gradio hidden by the test')\n")
    proc = run_cli("studio", "--model", "tiny", env={"PYTHONPATH": f"{hide}{__import__('os').pathsep}{REPO}"})
    assert_one_line_error(proc, "pip install 'omnideft[studio]'")


def test_orbit_of_view_names_without_a_colmap_model_is_one_line(tmp_path, capsys):
    code = cli_main(["generate", "--model", "tiny", "--prompt", "x", "--out", str(tmp_path / "o.gif"), "--orbit",
                     "view_000.png", "view_001.png"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "view names need --camera-from" in err[0], err
