"""One inference path: the same image gets the same calibrated probability and the same decision
through `predict` (CLI and API), `explain`, `evaluate`, training's own predictions.csv and the
exported ONNX model, for a run whose probabilities are temperature-scaled."""

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import medcls
from medcls.cli import cli


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    from tests.helpers import save_png

    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("calibrated")
    for label in ("no", "yes"):
        for i in range(30):
            image = (rng.random((40, 40)) * 60).astype(np.uint8)
            if label == "yes" or i % 7 == 0:  # a few bright 'no' images keep the classes overlapping
                image[10:25, 12:28] = 150 + int(rng.integers(0, 100))
            save_png(root / "data" / label / f"{label}{i}.png", image)
    run = medcls.train(root / "data", backbone="test_resnet", pretrained=False, image_size=32, epochs=3,
                       finetune_epochs=0, bootstrap=50, figures=False, calibration="temperature", patience=0,
                       precision="fp32", out=str(root / "run"))  # exports run in fp32: compare like with like
    return run, root / "data"


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_every_path_gives_the_same_probability_and_decision(calibrated, tmp_path):
    import onnxruntime

    run, data = calibrated
    assert run.temperature is not None and abs(run.temperature - 1) > 1e-3  # calibration changes probabilities
    files = sorted((data / "yes").glob("*.png"))[:3] + sorted((data / "no").glob("*.png"))[:3]

    api = run.predict(files)[:, 1]
    decided = list(run.decide(files))

    result = CliRunner().invoke(cli, ["predict", str(run.path), *map(str, files), "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    cli_rows = rows_of(tmp_path / "p.csv")
    np.testing.assert_allclose([float(r["prob_yes"]) for r in cli_rows], api, atol=1e-6)
    assert [r["predicted"] for r in cli_rows] == decided

    explained = run.explain(files, tmp_path / "cams", target_class="yes")
    np.testing.assert_allclose([r["probability"] for r in explained.rows], api, atol=1e-9)
    assert [r["predicted"] for r in explained.rows] == decided

    evaluation = run.evaluate(data, split="all", out=tmp_path / "eval", bootstrap=50)
    by_key = {r["key"]: r for r in rows_of(evaluation.path / "predictions.csv")}
    np.testing.assert_allclose([float(by_key[str(f)]["p_yes"]) for f in files], api, atol=1e-7)
    assert [by_key[str(f)]["decision"] for f in files] == decided

    trained = {r["key"]: r for r in rows_of(run.path / "predictions.csv")}
    np.testing.assert_allclose([float(trained[str(f)]["p_yes"]) for f in files], api, atol=1e-6)

    exported = run.export("onnx", tmp_path / "onnx")
    session = onnxruntime.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"images": run.read(files).stacked().numpy()})[0][:, 1]
    np.testing.assert_allclose(onnx, api, atol=1e-4)


def test_an_unreadable_input_is_an_error_for_predict_and_a_row_for_predictions(calibrated, tmp_path):
    run, data = calibrated
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    good = sorted((data / "yes").glob("*.png"))[0]
    with pytest.raises(medcls.DataError, match="broken.png"):
        run.predict([good, broken])
    predictions = run.predictions([good, broken])
    assert predictions.failed == 1 and np.isnan(predictions.probabilities[1]).all()
    assert predictions.decisions[0] in run.classes and predictions.decisions[1] is None


def test_explain_reports_the_probability_predict_gives_in_a_bf16_run(calibrated, tmp_path):
    """Grad-CAM runs in fp32, but the probability and decision it prints are predict's, also when
    the run predicts under bf16 autocast (where fp32 would differ by up to about 0.02)."""
    _, data = calibrated
    run = medcls.train(data, backbone="test_resnet", pretrained=False, image_size=32, epochs=1, finetune_epochs=0,
                       bootstrap=20, figures=False, patience=0, precision="bf16", out=str(tmp_path / "run"))
    files = sorted((data / "yes").glob("*.png"))[:2] + sorted((data / "no").glob("*.png"))[:2]
    explained = run.explain(files, tmp_path / "cams", target_class="yes")
    np.testing.assert_allclose([r["probability"] for r in explained.rows], run.predict(files)[:, 1], atol=1e-9)
    assert [r["predicted"] for r in explained.rows] == list(run.decide(files))


@pytest.mark.slow
def test_a_crop_foreground_run_reads_files_for_predict_and_evaluate_as_training_did(tmp_path):
    """Training (the decoded-image cache), predict and evaluate each cut an image to its object's
    box: the object lies at a different place on a black frame in each file, so a path that
    forgot the crop would see other pixels and give other probabilities."""
    from tests.helpers import save_png

    rng = np.random.default_rng(2)
    for label in ("no", "yes"):
        for i in range(16):
            image = np.zeros((60, 70), dtype=np.uint8)
            top, left = (int(v) for v in rng.integers(0, 25, size=2))
            image[top:top + 30, left:left + 40] = (60 + rng.random((30, 40)) * 80).astype(np.uint8)
            if label == "yes":
                image[top + 10:top + 20, left + 15:left + 25] = 250
            save_png(tmp_path / "data" / label / f"{label}{i}.png", image)
    run = medcls.train(tmp_path / "data", backbone="test_resnet", pretrained=False, image_size=32, epochs=2,
                       finetune_epochs=0, bootstrap=50, figures=False, patience=0, precision="fp32", crop_foreground=True,
                       out=str(tmp_path / "run"))
    assert run.info["crop_foreground"] is True and "crop_foreground" in run.info["preprocessing"]
    trained = {r["key"]: float(r["p_yes"]) for r in rows_of(run.path / "predictions.csv")}
    files = [Path(key) for key in sorted(trained)]
    np.testing.assert_allclose(run.predict(files)[:, 1], [trained[str(f)] for f in files], atol=1e-6)
    evaluation = run.evaluate(tmp_path / "data", split="all", out=tmp_path / "eval", bootstrap=50)
    evaluated = {r["key"]: float(r["p_yes"]) for r in rows_of(evaluation.path / "predictions.csv")}
    np.testing.assert_allclose([evaluated[str(f)] for f in files], [trained[str(f)] for f in files], atol=1e-6)
