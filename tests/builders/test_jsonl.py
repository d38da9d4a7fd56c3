import json

from builder_sources import decode, read_samples

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
