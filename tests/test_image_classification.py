"""`examples/image_classification/run_image_classification.py` end to end, offline: an image folder written
here, and the digits default."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from tests.conftest import load_example

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "image_classification" / "run_image_classification.py"
QUIET = ["--report_to", "none", "--disable_tqdm", "True", "--use_cpu", "True", "--save_strategy", "no",
         "--logging_steps", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16"]


@pytest.fixture(scope="module")
def script():
    return load_example(SCRIPT, "run_image_classification")


def write_image_folder(root: Path, per_class: int = 6) -> None:
    """train/ and val/ folders of three colour classes, images of varied sizes (the processor resizes)."""
    rng = np.random.default_rng(0)
    colours = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
    for split, count in (("train", per_class), ("val", 3)):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                size = int(rng.integers(10, 20))
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_prokt_with_feature_maps_end_to_end(script, tmp_path):
    write_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    results = script.main([
        "--train_dir", str(tmp_path / "data" / "train"), "--validation_dir", str(tmp_path / "data" / "val"),
        "--teacher_config", "resnet-small", "--student_config", "resnet-tiny", "--image_size", "16",
        "--strategy", "prokt", "--hidden_distill_weight", "1.0", "--augmentation", "crop_flip",
        "--do_train", "--do_eval", "--max_steps", "3", "--output_dir", str(out), "--plot", *QUIET,
    ])
    assert results["train_samples"] == 18 and results["eval_samples"] == 9
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and "eval_teacher_accuracy" in results
    assert "eval_top5_accuracy" not in results  # three classes: top-5 would always be 1
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["eval_accuracy"] == results["eval_accuracy"]
    assert (out / "training_curves.png").stat().st_size > 0
    assert "Distillation" in (out / "README.md").read_text()

    student = AutoModelForImageClassification.from_pretrained(out)
    assert student.config.id2label == {0: "cat", 1: "dog", 2: "fox"}
    assert student.config.hidden_sizes == [16, 32, 64]
    processor = AutoImageProcessor.from_pretrained(out)
    image = Image.open(next((tmp_path / "data" / "val" / "dog").iterdir()))
    pixel_values = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 16, 16)
    assert student(pixel_values=pixel_values).logits.shape == (1, 3)


def test_digits_default_each_strategy_and_kd_from_a_finetuned_teacher(script, tmp_path):
    common = ["--max_train_samples", "48", "--max_eval_samples", "40", "--max_steps", "2", *QUIET,
              "--do_train", "--do_eval"]
    teacher = script.main(["--student_config", "vit-micro", "--strategy", "finetune",
                           "--output_dir", str(tmp_path / "teacher"), *common])
    assert teacher["eval_samples"] == 40 and "eval_top5_accuracy" in teacher  # 10 classes
    for strategy, teacher_args in (("kd", ["--teacher_model_name_or_path", str(tmp_path / "teacher")]),
                                   ("prokt", ["--teacher_config", "vit-micro"])):
        results = script.main(["--student_config", "resnet-tiny", "--strategy", strategy, *teacher_args,
                               "--output_dir", str(tmp_path / strategy), *common])
        assert 0.0 <= results["eval_accuracy"] <= 1.0
        assert ("eval_teacher_accuracy" in results) == (strategy == "prokt")  # a KD teacher does not change
        student = AutoModelForImageClassification.from_pretrained(tmp_path / strategy)
        assert student.config.id2label[3] == "3" and student.config.num_channels == 3


def test_kd_refuses_an_untrained_teacher_before_training(script, tmp_path):
    with pytest.raises(ValueError, match="untrained one.*--teacher_model_name_or_path"):
        script.main(["--teacher_config", "resnet-small", "--student_config", "resnet-tiny", "--strategy", "kd",
                     "--do_train", "--output_dir", str(tmp_path / "out"), *QUIET])
    assert not (tmp_path / "out").exists()


def test_unknown_named_config_is_refused(script, tmp_path):
    with pytest.raises(ValueError, match="unknown model config 'resnet-7'.*resnet-18"):
        script.main(["--student_config", "resnet-7", "--strategy", "finetune", "--do_train",
                     "--output_dir", str(tmp_path / "out"), *QUIET])


def test_local_dataset_without_validation_split_and_a_json_config(script, tmp_path):
    """--dataset_name on a local folder (datasets infers imagefolder); no validation split, so
    --train_val_split holds part of train out; the student is built from a JSON config."""
    write_image_folder(tmp_path / "data")
    (tmp_path / "data" / "val").rename(tmp_path / "unused")
    config = SCRIPT.parent / "configs" / "wrn_16_2.json"
    results = script.main([
        "--dataset_name", str(tmp_path / "data"), "--train_val_split", "0.5", "--student_config", str(config),
        "--strategy", "finetune", "--image_size", "16", "--do_train", "--do_eval", "--max_steps", "1",
        "--output_dir", str(tmp_path / "out"), *QUIET,
    ])
    assert results["train_samples"] == 9 and results["eval_samples"] == 9
    student = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    assert student.config.depths == [2, 2, 2] and student.config.hidden_sizes == [32, 64, 128]
