"""`medcls score`: a CSV of predictions from any tool scored as a run is; `compare` on two files."""

import csv
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import medcls
from medcls.cli import cli
from tests.helpers import assert_one_line_error


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """A run on independent images (one per patient), whose predictions.csv medcls score re-reads."""
    from tests.helpers import save_png

    root = tmp_path_factory.mktemp("score")
    rng = np.random.default_rng(1)
    for label in ("no", "yes"):
        for i in range(30):
            image = (rng.random((32, 32)) * 80).astype(np.uint8)
            if label == "yes" or i % 7 == 0:  # a few hard negatives: not a perfect separation
                image[8:20, 8:20] = 160 + rng.integers(0, 60)
            save_png(root / "images" / label / f"{label}{i}.png", image)
    out = root / "run"
    result = run("train", "--data", root / "images", "--out", out, "--backbone", "test_resnet", "--no-pretrained",
                 "--image-size", "32", "--epochs", "2", "--finetune-epochs", "8", "--lr", "0.01", "--set", "bootstrap=300",
                 "--set", "val_fraction=0.3", "--set", "test_fraction=0.3")
    assert result.exit_code == 0, result.output
    return out


def test_score_equals_the_run_that_wrote_the_predictions(trained, tmp_path):
    scores = medcls.score(trained / "predictions.csv", out=tmp_path / "scores", bootstrap=300)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert scores.threshold == pytest.approx(metrics["threshold"], abs=1e-6)
    assert list(scores.splits) == ["test", "val", "train"]
    for name, value in metrics["test"].items():
        if isinstance(value, float) and name in scores.test and not np.isnan(value):
            assert scores.test[name].value == pytest.approx(value, abs=2e-6), name
    for name in ("sensitivity", "specificity", "ppv", "roc_auc"):  # Wilson / DeLong: the same inputs, the same bounds
        interval = metrics["intervals"]["test"][name]
        assert (scores.test[name].low, scores.test[name].high) == pytest.approx((interval["low"], interval["high"]),
                                                                                 abs=2e-6)
    for name in ("report.md", "report.html", "metrics.json", "roc.png"):
        assert (tmp_path / "scores" / name).is_file()
    assert "chosen on" in (tmp_path / "scores" / "report.md").read_text()


def test_score_from_the_cli_with_a_single_score_column_and_patients(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        label = int(rng.random() < 0.4)
        p = float(np.clip(0.5 + (0.25 if label else -0.25) + rng.normal(0, 0.2), 0.01, 0.99))
        rows.append([f"img{i}", f"pt{i // 2}", "val" if i < 60 else "test", "malignant" if label else "benign",
                     f"{p:.5f}", "ab"[i % 2]])
    path = write_csv(tmp_path / "cad.csv", ["image", "patient", "split", "truth", "prob", "site"], rows)
    result = run("score", path, "--label-column", "truth", "--score", "prob", "--patient-column", "patient",
                 "--by", "site", "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    assert "chosen on 60 validation rows by `youden`" in result.output
    assert re.match(r"test \(60 rows\): roc_auc 0\.\d{3} \(0\.\d{3}-[01]\.\d{3}\); sensitivity ",
                    result.output.splitlines()[1]), result.output  # each figure with its interval
    written = json.loads((tmp_path / "cad-scores" / "metrics.json").read_text())
    assert written["classes"] == ["benign", "malignant"]
    assert written["intervals"]["test"]["ppv"]["method"].startswith("Wilson, clustered (design effect over")
    assert set(written["subgroups"]) == set(written["subgroup_differences"]) == {"a", "b"}
    assert (written["subgroup_differences"]["a"]["roc_auc"]["method"]
            == "Obuchowski clustered DeLong (independent groups of patients)")
    assert (tmp_path / "cad-scores" / "subgroups_forest.png").is_file()
    assert "Holm-adjusted" in (tmp_path / "cad-scores" / "report.md").read_text()
    again = run("score", path, "--label-column", "truth", "--score", "prob", "--bootstrap", "200")
    assert again.exit_code == 0 and (tmp_path / "cad-scores-2" / "metrics.json").is_file()  # nothing overwritten


@pytest.mark.parametrize("header, rows, args, fragments", [
    (["label", "p_no", "p_yes"], [["yes", "0.2", "0.8"], ["no", "x", "0.1"]], [],
     ["row 3", "'x' in column 'p_no' is not a number"]),
    (["label", "p_no", "p_yes"], [["yes", "-0.2", "1.2"], ["no", "0.9", "0.1"]], [],
     ["row 2", "outside [0, 1]", "not logits"]),
    (["label", "p_cat"], [["cat", "0.2"], ["dog", "0.8"]], [], ["neither name says", "--positive-class dog"]),
    (["label", "p_no"], [["yes", "0.2"], ["no", "0.8"]], [], ["no probability column for class(es) yes", "--score"]),
    (["image", "label", "prob"], [["a", "1", "0.2"], ["b", "0", "0.1"]], [], ["no probability column", "--score prob (Python: score_column='prob')"]),
    (["label", "prob"], [["1", "0,2"], ["0", "0,8"]], ["--score", "prob"], ["row 2", "'0,2'", "write a decimal point"]),
    (["truth", "p_no", "p_yes"], [["yes", "0.2", "0.8"]], [], ["no column 'label'", "columns: truth, p_no, p_yes"]),
    (["label", "p_no", "p_yes"], [["yes", "0.2", "0.8"], ["no", "0.7", "0.3"]], [],
     ["no validation rows", "--threshold", "never choose it on the test rows"]),
    (["label", "split", "p_no", "p_yes"], [["yes", "holdout2", "0.2", "0.8"]], [], ["row 2", "'holdout2'"]),
    (["key", "label", "p_no", "p_yes"], [["a", "yes", "0.2", "0.8"], ["b", "no", "0.6", "0.4"], ["a", "yes", "0.2", "0.8"]],
     [], ["rows 2 and 4", "case 'a' appears twice (the same row again)", "--patient-column"]),
    (["key", "label", "p_no", "p_yes"], [["a", "yes", "0.2", "0.8"], ["a", "no", "0.6", "0.4"]], [],
     ["rows 2 and 3", "case 'a' appears twice (a different row)"]),
    (["label", "p_no", "p_yes"], [["yes", "0.5", "0.8"], ["no", "0.9", "0.1"]], [],
     ["row 2", "sum to 1.3, not 1"]),
    (["label", "p_no", "p_yes"], [["yes", "7", "0.8"], ["no", "0.9", "0.1"]], [],
     ["row 2", "outside [0, 1] (7)"]),
])
def test_bad_prediction_files_are_one_line(tmp_path, header, rows, args, fragments):
    path = write_csv(tmp_path / "p.csv", header, rows)
    assert_one_line_error(run("score", path, "--out", tmp_path / "out", *args), str(path), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_semicolon_separated_file_scores_as_the_comma_one(tmp_path):
    rng = np.random.default_rng(3)
    rows = [[f"c{i}", "val" if i < 40 else "test", str(i % 2), f"{np.clip(0.3 + 0.4 * (i % 2) + rng.normal(0, 0.2), 0, 1):.4f}"]
            for i in range(100)]
    header = ["case", "split", "label", "prob"]
    comma = write_csv(tmp_path / "comma.csv", header, rows)
    (tmp_path / "semicolon.csv").write_text("\n".join(";".join(r) for r in [header, *rows]) + "\n")
    a = medcls.score(comma, score_column="prob", bootstrap=100)
    b = medcls.score(tmp_path / "semicolon.csv", score_column="prob", bootstrap=100)
    assert a.test.roc_auc == b.test.roc_auc and a.test.n == b.test.n == 60


def test_a_missing_file_and_an_occupied_out_folder(tmp_path):
    assert_one_line_error(run("score", tmp_path / "none.csv"), "does not exist")
    assert not (tmp_path / "none-scores").exists()  # the folder reserved for the report is removed again
    path = write_csv(tmp_path / "p.csv", ["label", "p_no", "p_yes"], [["yes", "0.2", "0.8"], ["no", "0.7", "0.3"]])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert_one_line_error(run("score", path, "--out", tmp_path / "out", "--threshold", "0.5"), "not an empty folder")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def two_tools(tmp_path, n=160):
    """Two binary prediction files for the same cases: the second in another row order, with
    medcls's cross-validation column names (case, prob_<class>)."""
    rng = np.random.default_rng(5)
    y = (rng.random(n) < 0.4).astype(int)
    p = [np.clip(0.5 + (y - 0.5) * 0.3 + rng.normal(0, 0.25, n), 0, 1) for _ in range(2)]
    split = np.where(np.arange(n) < 60, "val", "test")
    a = write_csv(tmp_path / "a.csv", ["key", "split", "label", "p_benign", "p_malignant"],
                  [[f"k{i}", split[i], "benign malignant".split()[y[i]], 1 - p[0][i], p[0][i]] for i in range(n)])
    order = rng.permutation(n)
    b = write_csv(tmp_path / "b.csv", ["case", "split", "label", "prob_benign", "prob_malignant"],
                  [[f"k{i}", split[i], "benign malignant".split()[y[i]], 1 - p[1][i], p[1][i]] for i in order])
    return a, b, y, p, split


def test_several_files_are_scored_as_the_mean_of_their_probabilities(tmp_path):
    from sklearn.metrics import roc_auc_score

    a, b, y, p, split = two_tools(tmp_path)
    mean = (p[0] + p[1]) / 2
    by_hand = write_csv(tmp_path / "mean.csv", ["key", "split", "label", "p_benign", "p_malignant"],
                        [[f"k{i}", split[i], "benign malignant".split()[y[i]], 1 - mean[i], mean[i]]
                         for i in range(len(y))])
    result = run("score", a, b, "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "mean-of-2-scores"
    written = json.loads((folder / "metrics.json").read_text())
    test = split == "test"
    assert written["test"]["roc_auc"] == pytest.approx(roc_auc_score(y[test], mean[test]))
    assert written["test"]["roc_auc"] != pytest.approx(roc_auc_score(y[test], p[0][test]))
    assert written["source"] == [str(a), str(b)]
    expected = medcls.score(by_hand, out=tmp_path / "by-hand", bootstrap=200)
    assert written["threshold"] == pytest.approx(expected.threshold)
    for name in ("sensitivity", "specificity", "roc_auc"):
        assert written["test"][name] == pytest.approx(expected.test[name].value)
    rows = list(csv.DictReader((folder / "predictions.csv").open()))  # the mean, scoreable again
    assert [r["key"] for r in rows] == [f"k{i}" for i in range(len(y))]
    assert float(rows[7]["p_malignant"]) == pytest.approx(mean[7], rel=1e-6)
    assert "mean of the class probabilities (soft voting)" in (folder / "report.md").read_text()


def test_the_mean_of_out_of_fold_files_without_splits_is_scored_again(tmp_path):
    a, b, y, p, _ = two_tools(tmp_path)
    for path in (a, b):  # as cross-validation writes them: no split column
        with open(path, newline="") as fh:
            header, *rows = list(csv.reader(fh))
        write_csv(path, [c for c in header if c != "split"], [[v for c, v in zip(header, r) if c != "split"]
                                                               for r in rows])
    mean = medcls.score([a, b], out=tmp_path / "mean", threshold_rule="fixed", bootstrap=200)
    assert list(mean.splits) == ["all"] and mean.test.n == len(y)
    again = medcls.score(tmp_path / "mean" / "predictions.csv", out=tmp_path / "again", threshold_rule="fixed",
                         bootstrap=200)
    assert again.test["roc_auc"].value == pytest.approx(mean.test["roc_auc"].value)


@pytest.mark.parametrize("change, fragments", [
    (lambda r: r[:-1], ["hold different sets of cases", "matched by the key column"]),
    (lambda r: [[*r[0][:2], "benign" if r[0][2] == "malignant" else "malignant", *r[0][3:]], *r[1:]],
     ["different labels for the same keys"]),
    (lambda r: [[r[0][0], "test" if r[0][1] == "val" else "val", *r[0][2:]], *r[1:]], ["different splits"]),
    (lambda r: [r[0], [r[0][0], *r[1][1:]], *r[2:]], ["rows 2 and 3", "appears twice (a different row)",
                                                       "one row per case"]),
])
def test_files_that_do_not_hold_the_same_cases_are_not_averaged(tmp_path, change, fragments):
    a, b, *_ = two_tools(tmp_path)
    with open(b, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    write_csv(b, header, change(rows))
    assert_one_line_error(run("score", a, b, "--out", tmp_path / "out"), *fragments)
    assert not (tmp_path / "out").exists()
    other = write_csv(tmp_path / "c.csv", ["key", "label", "p_benign", "p_cancer"], [["k0", "benign", 0.5, 0.5]])
    assert_one_line_error(run("score", a, other, "--threshold", "0.5"), "different classes")


def test_compare_two_prediction_files_pairs_cases_by_key(tmp_path):
    from medcls.stats.intervals import paired_delong

    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.5).astype(int)
    good = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.2, 200), 0, 1)
    weak = np.clip(0.5 + (y - 0.5) * 0.2 + rng.normal(0, 0.2, 200), 0, 1)
    split = np.where(np.arange(200) < 80, "val", "test")
    header = ["key", "split", "label", "p_normal", "p_tumour"]
    a = write_csv(tmp_path / "a.csv", header, [[f"k{i}", split[i], "tumour" if y[i] else "normal", 1 - good[i],
                                                 good[i]] for i in range(200)])
    order = rng.permutation(200)  # the other tool wrote its rows in another order
    b = write_csv(tmp_path / "b.csv", header, [[f"k{i}", split[i], "tumour" if y[i] else "normal", 1 - weak[i],
                                                 weak[i]] for i in order])
    result = run("compare", a, b, "--out", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "c.json").read_text())
    test = np.arange(80, 200)
    expected = paired_delong(y[test], good[test], weak[test])
    assert written["split"] == "test" and written["n"] == 120
    assert written["auc"]["difference"] == pytest.approx(expected["difference"])
    assert written["auc"]["p_value"] == pytest.approx(expected["p_value"])
    other = write_csv(tmp_path / "c.csv", header, [[f"z{i}", split[i], "tumour" if y[i] else "normal", 0.5, 0.5]
                                                    for i in range(200)])
    assert_one_line_error(run("compare", a, other), "different test cases", "key column")


# pROC's own expected values for its aSAH data (tests/testthat/test-var.R, test-roc.test.R)
PROC_VAR = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}
PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946, "s100b": 0.731368563685637}
PROC_ROC_TEST = {("wfns", "s100b"): (2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
                 ("wfns", "ndka"): (2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
                 ("ndka", "s100b"): (-1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094)}


def asah():
    from pathlib import Path

    rows = list(csv.DictReader(open(Path(__file__).parent / "data" / "asah.csv")))
    y = np.array([r["outcome"] == "Poor" for r in rows], dtype=int)
    return rows, y, {c: np.array([float(r[c]) for r in rows]) for c in PROC_VAR}


@pytest.mark.parametrize("marker", sorted(PROC_VAR))
def test_delong_variance_equals_proc(marker):
    from medcls.stats.intervals import delong_auc_variance

    _, y, markers = asah()
    auc, variance = delong_auc_variance(y, markers[marker])
    assert auc == pytest.approx(PROC_AUC[marker], abs=1e-12)
    assert variance == pytest.approx(PROC_VAR[marker], rel=1e-10)


def test_compare_of_two_prediction_files_equals_proc_roc_test(tmp_path):
    """The markers, mapped monotonically into [0, 1] (x / (1 + x): ranks, so DeLong, unchanged),
    written as two tools' prediction files and compared from the CLI: roc.test's Z, p and interval."""
    rows, y, markers = asah()
    header = ["key", "label", "p_Good", "p_Poor"]
    for (a, b), (z, p, low, high) in PROC_ROC_TEST.items():
        files = []
        for marker in (a, b):
            scores = markers[marker] / (1 + markers[marker])
            files.append(write_csv(tmp_path / f"{marker}.csv", header,
                                   [[r["patient"], r["outcome"], 1 - s, s] for r, s in zip(rows, scores)]))
        result = run("compare", *files, "--positive-class", "Poor", "--threshold-rule", "fixed",
                     "--out", tmp_path / "c.json", "--overwrite")
        assert result.exit_code == 0, result.output
        auc = json.loads((tmp_path / "c.json").read_text())["auc"]
        assert (auc["z"], auc["p_value"]) == pytest.approx((z, p), rel=1e-9)
        assert (auc["low"], auc["high"]) == pytest.approx((low, high), abs=1e-8)  # qnorm's last digits


def test_scored_test_rows_list_the_cases_to_look_at_again(tmp_path):
    """The test rows given the lowest probability for their own label, by key, with the ROC AUC of
    the others (checked against scikit-learn with the case removed); the fold where the file has one."""
    from sklearn.metrics import roc_auc_score

    y = np.array([0] * 6 + [1] * 6)
    p = np.array([0.1, 0.2, 0.3, 0.9, 0.15, 0.25, 0.9, 0.8, 0.05, 0.7, 0.85, 0.6])  # n3 and y8 at odds
    path = write_csv(tmp_path / "oof.csv", ["case", "fold", "label", "p_no", "p_yes"],
                     [[f"{'ny'[y[i]]}{i}", i % 3 + 1, "no yes".split()[y[i]], 1 - p[i], p[i]] for i in range(12)])
    scores = medcls.score(path, out=tmp_path / "scores", threshold_rule="fixed", bootstrap=200)
    first, second = scores.to_review[:2]
    assert (first.case, first.label, first.fold) == ("y8", "yes", 3) and first.p_label == pytest.approx(0.05)
    assert (second.case, second.label) == ("n3", "no") and second.p_label == pytest.approx(0.1)
    keep = np.arange(12) != 8
    assert first.auc_without == pytest.approx(roc_auc_score(y[keep], p[keep]))
    assert len(scores.to_review) == 10
    report = (tmp_path / "scores" / "report.md").read_text()
    assert "Cases to look at again" in report and "`y8`" in report and "ROC AUC without it" in report
    # Without a fold column there is none in the table either.
    plain = write_csv(tmp_path / "plain.csv", ["key", "label", "p_yes"],
                      [[f"k{i}", "no yes".split()[y[i]], p[i]] for i in range(12)])
    unfolded = medcls.score(plain, out=tmp_path / "plain", score_column="p_yes", threshold_rule="fixed", bootstrap=200)
    assert unfolded.to_review[0].fold is None
    assert "| fold |" not in (tmp_path / "plain" / "report.md").read_text()


def test_one_class_predictions_list_the_missed_cases(tmp_path):
    path = write_csv(tmp_path / "tumours.csv", ["key", "label", "p_no", "p_yes"],
                     [["a", "yes", 0.1, 0.9], ["b", "yes", 0.8, 0.2], ["c", "yes", 0.4, 0.6]])
    scores = medcls.score(path, out=tmp_path / "s", threshold=0.5, positive_class="yes", bootstrap=100)
    assert [c.case for c in scores.to_review] == ["b", "c", "a"] and scores.to_review[0].auc_without is None
    assert "ROC AUC without it" not in (tmp_path / "s" / "report.md").read_text()
