import json

from builder_sources import decode, noise_image, read_samples

from data_builders.check import main as check_main
from data_builders.jsonl import main
from omnideft.data.format.schema import placeholder_numbers


def build(src, out, *extra):
    return main(["--src", str(src / "toy.jsonl"), "--images", str(src / "images"), "--out", str(out),
                 "--max-pixels", "5000", "--shard-size", "4", "--no-progress", *extra])


def test_records_become_samples_and_bad_inputs_are_counted(jsonl_source, tmp_path):
    assert build(jsonl_source, tmp_path / "o") == 0
    split = tmp_path / "o" / "train"
    samples = read_samples(split)
    by_line = {(s["meta"]["source"]["line"], s["meta"]["source"]["ids"][-1]): s for s in samples}
    assert sorted(by_line) == [(1, "a.jpg"), (2, "b.png"), (3, "a.jpg"), (3, "e.jpg"), (4, "b.png")]
    assert by_line[(1, "a.jpg")]["meta"]["task"] == "omnigen/text_to_iamge"
    assert by_line[(1, "a.jpg")]["meta"]["inputs"] == []
    tryon = by_line[(3, "e.jpg")]
    assert tryon["meta"]["task"] == "omnigen/try_on" and len(tryon["meta"]["inputs"]) == 2
    assert placeholder_numbers(tryon["meta"]["instruction"]) == [1, 2]
    assert tryon["meta"]["inputs"][0]["member"] == "in0.jpg" and "in1.jpg" in tryon
    assert by_line[(2, "b.png")]["meta"]["output"]["member"] == "out.png"
    assert decode(by_line[(2, "b.png")]["out.png"]).tobytes() == decode((jsonl_source / "images" / "b.png")
                                                                        .read_bytes()).convert("RGB").tobytes()
    manifest = json.loads((split / "manifest.json").read_text())
    ids = {r: (e["count"], [x.split(":")[0] for x in e["examples"]]) for r, e in manifest["skipped"].items()}
    assert ids == {
        "bad_metadata": (2, ["line11", "line12"]),
        "corrupt": (1, ["line7"]),
        "missing": (1, ["line5"]),
        "too_large": (1, ["line10"]),
        "truncated": (1, ["line8"]),
        "wrong_mode": (1, ["line9"]),
        "zero_size": (1, ["line6"]),
    }
    # a skip record names the path that was tried, not only the line
    assert manifest["skipped"]["missing"]["examples"] == [f"line5: {jsonl_source / 'images' / 'nope.jpg'}"]
    assert check_main([str(split)]) == 0


def test_not_jsonl_is_one_line_error(tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text("hello\nworld\n")
    assert main(["--src", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected JSON objects with instruction/input_images/output_image" in err[0]


def toy_data(root):
    """OmniGen's toy_data/ layout: toy_data.jsonl beside images/, bare file names in the lines (its trainer is
    given --image_path toy_data/images). One image the file names is not there, as cat.png is not in the repo."""
    toy = root / "OmniGen" / "toy_data"
    (toy / "images").mkdir(parents=True)
    for k, name in enumerate(["walking.png", "edit_source_1.png", "edit_target_1.png", "model.png", "clothes.png",
                              "try_on.png"]):
        noise_image(20 + k, size=(48, 40)).save(toy / "images" / name)
    lines = [
        {"task_type": "text_to_iamge", "instruction": "A white cat resting on a picnic table.",
         "input_images": [], "output_image": "cat.png"},
        {"task_type": "text_to_iamge", "instruction": "a person walking on a suspension bridge.",
         "input_images": [], "output_image": "walking.png"},
        {"task_type": "image_edit", "instruction": "<img><|image_1|></img> The umbrella should be red.",
         "input_images": ["edit_source_1.png"], "output_image": "edit_target_1.png"},
        {"task_type": "try-on", "instruction": "<img><|image_1|></img> wears <img><|image_2|></img>.",
         "input_images": ["model.png", "clothes.png"], "output_image": "try_on.png"},
    ]
    (toy / "toy_data.jsonl").write_text("\n".join(json.dumps(x, separators=(",", ":")) for x in lines))
    return toy


def test_docs_example_on_omnigen_toy_data_layout(tmp_path, capsys):
    toy = toy_data(tmp_path)
    # as docs/builders.md writes it: no --images, the default finds toy_data/images
    assert main(["--src", str(toy / "toy_data.jsonl"), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    samples = read_samples(tmp_path / "o" / "train")
    assert sorted(s["meta"]["task"] for s in samples) == ["omnigen/image_edit", "omnigen/text_to_iamge",
                                                         "omnigen/try_on"]
    manifest = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text())
    assert manifest["skipped"] == {"missing": {"count": 1, "examples": [f"line1: {toy / 'images' / 'cat.png'}"]}}


def test_paths_outside_images_need_allow_outside(tmp_path):
    toy = toy_data(tmp_path)
    noise_image(9).save(tmp_path / "private.png")
    lines = [{"instruction": "up", "input_images": [], "output_image": "../../../private.png"},
             {"instruction": "absolute", "input_images": [], "output_image": str(tmp_path / "private.png")},
             {"instruction": "inside", "input_images": [], "output_image": "walking.png"}]
    (toy / "mixed.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    args = ["--src", str(toy / "mixed.jsonl"), "--resolution", "32", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    skipped = json.loads((tmp_path / "a" / "train" / "manifest.json").read_text())["skipped"]
    assert list(skipped) == ["outside_images"] and skipped["outside_images"]["count"] == 2
    assert skipped["outside_images"]["examples"][0] == (f"line1: ../../../private.png leads outside --images "
                                                        f"{toy / 'images'} (--allow-outside reads it)")
    assert main([*args, "--out", str(tmp_path / "b"), "--allow-outside"]) == 0
    assert len(read_samples(tmp_path / "b" / "train")) == 3
