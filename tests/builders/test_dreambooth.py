import json

from builder_sources import DREAMBOOTH_PROMPTS, read_samples

from data_builders.check import main as check_main
from data_builders.dreambooth import main, parse_prompt_file
from omnideft.data.format.schema import placeholder_numbers


def test_subject_reference_and_prior_samples(dreambooth_root, tmp_path):
    rc = main(["--src", str(dreambooth_root), "--subject", "dog6", "--class-images",
               str(dreambooth_root.parent / "class_dog"), "--out", str(tmp_path / "o"), "--resolution", "32",
               "--reference-views", "2", "--no-progress"])
    assert rc == 0
    split = tmp_path / "o" / "train"
    samples = read_samples(split)
    tasks = [s["meta"]["task"] for s in samples]
    assert tasks.count("dreambooth/subject") == 3 and tasks.count("dreambooth/class_prior") == 2
    for s in samples:
        meta = s["meta"]
        if meta["task"] == "dreambooth/subject":
            assert meta["instruction"] == "a photo of sks dog" and meta["inputs"] == []
        if meta["task"] == "dreambooth/class_prior":
            assert meta["instruction"] == "a photo of a dog"
        if meta["task"] == "dreambooth/subject_reference":
            assert placeholder_numbers(meta["instruction"]) == [1, 2] and meta["source"]["ids"][-1] not in \
                meta["source"]["ids"][:-1]
    manifest = json.loads((split / "manifest.json").read_text())
    # 03.jpg is empty: its own samples and the references samples that would use it are skipped as zero_size
    assert manifest["skipped"]["zero_size"]["count"] >= 2
    assert manifest["extra"]["prompt_set"] == "live"
    assert manifest["extra"]["eval_prompts"] == ["a sks dog in the jungle", "a sks dog wearing a red hat",
                                                 "a sks dog sleeping"]
    assert check_main([str(split)]) == 0


def test_plain_subject_folder_needs_class(dreambooth_root, tmp_path, capsys):
    folder = dreambooth_root / "backpack"
    assert main(["--src", str(folder), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--class-name is needed" in capsys.readouterr().err
    assert main(["--src", str(folder), "--class-name", "backpack", "--token", "zwx", "--out", str(tmp_path / "o"),
                 "--resolution", "32", "--reference-views", "0", "--no-progress"]) == 0
    samples = read_samples(tmp_path / "o" / "train")
    assert [s["meta"]["instruction"] for s in samples] == ["a photo of zwx backpack"] * 2


def test_prompt_file_parsing():
    classes, lists = parse_prompt_file(DREAMBOOTH_PROMPTS)
    assert classes == {"dog6": "dog", "backpack": "backpack"}
    assert lists["object"] == ["a {0} {1} in the jungle", "a {0} {1} on the beach"]
    assert len(lists["live"]) == 3
