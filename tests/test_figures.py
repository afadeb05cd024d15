"""The report's figures say what a reader needs: AUC with its interval in the ROC legend, the split in
the PR title, whole-number epochs, and a vector (SVG) copy beside every PNG for a journal."""

import numpy as np

from medcls.reports import plots


def captured(monkeypatch):
    figures = []

    def keep(fig, path):
        figures.append(fig)

    monkeypatch.setattr(plots, "save", keep)
    return figures


def scores(n=120, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    p1 = np.clip(0.35 * labels + rng.random(n) * 0.65, 0, 1)
    return np.stack([1 - p1, p1], 1), labels


def test_the_roc_legend_gives_each_split_its_auc_and_test_its_interval(monkeypatch, tmp_path):
    from sklearn.metrics import roc_auc_score

    from medcls.stats.clustered import auc_interval

    figures = captured(monkeypatch)
    (train_p, train_y), (test_p, test_y) = scores(seed=1), scores(seed=2)
    plots.plot_roc({"train": (train_p, train_y, 0.5), "test": (test_p, test_y, 0.5)}, ["no", "yes"], tmp_path / "roc.png")
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    interval = auc_interval(test_y, test_p[:, 1])
    assert f"train, AUC {roc_auc_score(train_y, train_p[:, 1]):.3f}" in legend
    assert f"test, AUC {roc_auc_score(test_y, test_p[:, 1]):.3f} ({interval.low:.3f}-{interval.high:.3f})" in legend


def test_the_pr_title_names_its_split_and_epochs_are_whole_numbers(monkeypatch, tmp_path):
    from types import SimpleNamespace

    figures = captured(monkeypatch)
    probs, labels = scores()
    plots.plot_pr(probs, labels, tmp_path / "pr.png", "val")
    assert figures[0].axes[0].get_title() == "Precision-recall (val)"
    history = [SimpleNamespace(epoch=e, train_loss=1 / e, val_loss=1 / e, train_auc=0.5, val_metrics={"roc_auc": 0.6},
                               stage="frozen" if e < 3 else "finetune") for e in range(1, 5)]
    plots.plot_learning_curves(history, tmp_path / "curves.png")
    figures[1].canvas.draw()  # tick positions are settled on drawing
    ticks = figures[1].axes[0].get_xticks()
    shown = [t for t in ticks if 1 <= t <= 4]
    assert shown and all(float(t).is_integer() for t in shown)


def test_every_figure_has_an_svg_beside_its_png(tmp_path):
    probs, labels = scores()
    plots.plot_calibration(probs, labels, tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert (tmp_path / "calibration.svg").read_text().lstrip().startswith("<?xml")


def test_a_shared_report_names_its_data_without_the_machines_path():
    from medcls.reports.documents import shown_source

    assert shown_source("/home/ana/hospital-x/2025/brain-mri") == "brain-mri"
    assert shown_source("/data/ct/overview.csv") == "overview.csv"
    assert shown_source("synthetic") == "synthetic"


def test_an_evaluation_report_title_holds_no_absolute_path(image_folder, tmp_path):
    """(TINY runs draw no figures: the training report says so and links none; evaluate draws its own.)"""
    from tests.helpers import TINY, run

    assert run("train", *TINY, "--data", image_folder, "--out", tmp_path / "r").exit_code == 0
    assert run("evaluate", tmp_path / "r").exit_code == 0
    evaluation = next((tmp_path / "r").glob("evaluation*"))
    for report in (tmp_path / "r" / "report.md", evaluation / "report.md"):
        title = report.read_text().splitlines()[0]
        assert str(tmp_path) not in title and str(image_folder) not in title, title
    trained = (tmp_path / "r" / "report.md").read_text()
    assert not list((tmp_path / "r").glob("*.png")) and not list((tmp_path / "r").glob("*.svg"))
    assert "Figures were not drawn (figures: false)." in trained and "![" not in trained
    assert (evaluation / "roc.png").is_file() and "![ROC with 95% band](roc.png)" in (evaluation / "report.md").read_text()


def test_calibration_bins_hold_at_least_the_stated_cases_with_wilson_intervals():
    from medcls.stats.calibration import MIN_CASES_PER_BIN, calibration_bins
    from medcls.stats.intervals import wilson

    rng = np.random.default_rng(3)
    p1 = np.concatenate([rng.uniform(0, 0.1, 60), rng.uniform(0.9, 1.0, 40), [0.45, 0.55, 0.62]])  # 3 lonely cases
    y = (rng.random(len(p1)) < p1).astype(int)
    bins = calibration_bins(y, p1)
    assert bins["count"].sum() == len(p1) and (bins["count"] >= MIN_CASES_PER_BIN).all()
    assert (bins["low"][1:] == bins["high"][:-1]).all()  # adjacent, covering every case once
    for low, high, observed, o_low, o_high, n in zip(bins["low"], bins["high"], bins["observed"],
                                                    bins["observed_low"], bins["observed_high"], bins["count"]):
        inside = (p1 >= low) & ((p1 < high) | (high == 1))
        assert inside.sum() == n and observed == y[inside].mean()
        assert (o_low, o_high) == wilson(int(y[inside].sum()), int(n))
    tiny = calibration_bins(np.array([0, 1, 1]), np.array([0.2, 0.5, 0.9]))
    assert list(tiny["count"]) == [3]  # fewer cases than a bin needs: one bin, never three of one


def test_the_calibration_figure_has_error_bars_counts_and_a_histogram(monkeypatch, tmp_path):
    figures = captured(monkeypatch)
    probs, labels = scores(n=200)
    plots.plot_calibration(probs, labels, tmp_path / "calibration.png", "val")
    reliability, histogram = figures[0].axes
    assert reliability.get_title().startswith("Calibration (val)\nbins of at least 10 cases")
    assert reliability.containers, "per-bin intervals are drawn as error bars"
    assert sum(patch.get_height() for patch in histogram.patches) == 200


def test_the_decision_curve_shows_the_thresholds_where_the_model_helps(monkeypatch, tmp_path):
    figures = captured(monkeypatch)
    probs, labels = scores(n=300)
    curve = plots.plot_decision_curve(probs, labels, tmp_path / "dc.png")
    right = figures[0].axes[0].get_xlim()[1]
    thresholds = np.linspace(0.01, 0.99, 99)
    last = thresholds[np.asarray(curve["model"]) > 0].max()
    assert last < right <= max(0.3, last + 0.15) and right <= 0.99
