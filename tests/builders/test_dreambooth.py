import json

from builder_sources import DREAMBOOTH_PROMPTS, noise_image, read_samples

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


def test_subject_folder_finds_class_and_prompts_one_level_up(dreambooth_root, tmp_path):
    # DreamBooth's repository: dataset/prompts_and_classes.txt next to dataset/backpack/
    assert main(["--src", str(dreambooth_root / "backpack"), "--token", "zwx", "--out", str(tmp_path / "o"),
                 "--resolution", "32", "--reference-views", "0", "--no-progress"]) == 0
    samples = read_samples(tmp_path / "o" / "train")
    assert [s["meta"]["instruction"] for s in samples] == ["a photo of zwx backpack"] * 2
    manifest = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text())
    assert manifest["extra"]["eval_prompts"] == ["a zwx backpack in the jungle", "a zwx backpack on the beach"]
    assert manifest["args"]["token"] == "zwx"  # a subject token is not a secret


def test_subject_folder_without_class_names_the_files_looked_for(tmp_path, capsys):
    folder = tmp_path / "my_cat"
    folder.mkdir()
    noise_image(1).save(folder / "00.jpg")
    assert main(["--src", str(folder), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --class-name is needed for subject 'my_cat': looked for its class in "
                   f"{folder / 'prompts_and_classes.txt'} and {tmp_path / 'prompts_and_classes.txt'}, "
                   "found no such file"]


def test_empty_evaluation_prompts_warn(dreambooth_root, tmp_path, capsys):
    prompts = tmp_path / "classes_only.txt"
    prompts.write_text("Classes\n\nsubject_name,class\nbackpack,backpack\n")
    assert main(["--src", str(dreambooth_root / "backpack"), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                 "--resolution", "32", "--reference-views", "0", "--no-progress"]) == 0
    assert f"warning: no object evaluation prompts in {prompts}; the manifest's extra.eval_prompts is empty" in \
        capsys.readouterr().err


def test_token_is_part_of_the_build_identity(dreambooth_root, tmp_path, capsys):
    args = ["--src", str(dreambooth_root / "backpack"), "--out", str(tmp_path / "o"), "--resolution", "32",
            "--reference-views", "0", "--no-progress"]
    assert main([*args, "--token", "sks"]) == 0
    capsys.readouterr()
    assert main([*args, "--token", "zwx"]) == 2  # not a silent reuse of the sks shards
    assert "holds a different build (arguments differ: --token); pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--token", "zwx", "--overwrite"]) == 0
    assert {s["meta"]["instruction"] for s in read_samples(tmp_path / "o" / "train")} == {"a photo of zwx backpack"}


def test_source_ids_unique_across_subject_and_class_images(dreambooth_root, tmp_path):
    classes = tmp_path / "class_backpack"
    classes.mkdir()
    for name in ("00.jpg", "01.jpg"):  # the same file names as the subject's
        noise_image(5).save(classes / name)
    assert main(["--src", str(dreambooth_root / "backpack"), "--class-images", str(classes), "--out",
                 str(tmp_path / "o"), "--resolution", "32", "--reference-views", "0", "--no-progress"]) == 0
    ids = [s["meta"]["source"]["ids"][-1] for s in read_samples(tmp_path / "o" / "train")]
    assert sorted(ids) == ["class:class_backpack/00.jpg", "class:class_backpack/01.jpg",
                           "subject:backpack/00.jpg", "subject:backpack/01.jpg"]


def test_prompt_file_parsing():
    classes, lists = parse_prompt_file(DREAMBOOTH_PROMPTS)
    assert classes == {"dog6": "dog", "backpack": "backpack"}
    assert lists["object"] == ["a {0} {1} in the jungle", "a {0} {1} on the beach"]
    assert len(lists["live"]) == 3
