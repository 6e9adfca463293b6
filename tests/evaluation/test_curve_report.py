"""Learning-curve fit on a known curve, the curve command end to end, and the HTML report."""

from __future__ import annotations

import json
import re
import sys

import numpy as np

from tenni.evaluation.curve import PowerLaw, fit_power_law, summarise_curve


def test_power_law_fit_recovers_a_synthetic_saturating_curve():
    truth = PowerLaw(a=0.92, b=0.6, c=0.7)
    n = np.array([2, 4, 8, 16, 32])
    fitted = fit_power_law(n, truth(n))
    assert abs(fitted.a - truth.a) < 0.02
    assert abs(float(fitted(128)) - float(truth(128))) < 0.01  # forecast beyond the measured budgets


def test_labels_for_target_inverts_the_curve():
    law = PowerLaw(a=0.9, b=0.5, c=0.5)
    need = law.labels_for(0.8)
    assert abs(float(law(need)) - 0.8) < 1e-9
    assert law.labels_for(0.95) is None  # above the plateau


def test_forecast_interval_contains_the_truth_under_noise():
    rng = np.random.default_rng(0)
    truth = PowerLaw(a=0.9, b=0.5, c=0.6)
    budgets = [2, 4, 8, 16]
    per_seed = truth(budgets) + rng.normal(0, 0.01, size=(5, 4))
    result = summarise_curve("probe", budgets, per_seed, forecast_at=[64])
    f = result.forecast["64"]
    assert f["low"] <= float(truth(64)) <= f["high"]
    assert abs(f["mean"] - float(truth(64))) < 0.03


def test_curve_command_writes_plot_html_and_json(capsys, monkeypatch, tmp_path):
    from tenni.cli import main

    from ..conftest import make_texts, write_csv

    data = write_csv(tmp_path / "d.csv", *make_texts(20, seed=5))
    out = tmp_path / "curve"
    monkeypatch.setattr(sys, "argv", ["tenni", "curve", str(data), "-o", str(out), "--budgets", "2,4,8",
                                      "--seeds", "2", "--target", "0.9"])
    main()
    result = json.loads((out / "curve.json").read_text())
    assert set(result["curves"]) == {"probe", "scratch"}
    probe = result["curves"]["probe"]
    assert np.mean(probe["accuracy"]["8"]) > 0.8
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64" in (out / "curve.html").read_text()
    assert "labels per class" in capsys.readouterr().out
    assert set(result["target"]["labels_per_class"]) == {"probe", "scratch"}  # the --target answer is saved too


def test_labels_needed_trust_measurements_over_the_fit():
    """A target already reached at a measured budget is answered with that budget, whatever the fit says; beyond
    the measurements the law extrapolates (never below the largest budget); above its plateau there is no answer."""
    from tenni.evaluation.curve import needed_labels

    flat_but_badly_fitted = {"a": 0.999, "b": 0.9, "c": 0.1}  # would need thousands of labels for 0.95
    accuracy = {"2": [0.6, 0.7], "4": [0.96, 0.97], "8": [1.0, 1.0]}
    assert needed_labels(accuracy, flat_but_badly_fitted, 0.95) == 4.0
    assert needed_labels(accuracy, flat_but_badly_fitted, 0.3) == 2.0  # not "0 labels"
    law = {"a": 0.95, "b": 0.5, "c": 0.5}
    low = {"2": [0.5], "4": [0.6], "8": [0.7]}
    assert needed_labels(low, law, 0.9) == PowerLaw(**law).labels_for(0.9) > 8
    assert needed_labels(low, law, 0.97) is None


def test_saved_model_has_a_report(train_csv, test_csv, tmp_path):
    import tenni

    model = tenni.fit(train_csv, test=test_csv, strategy="probe")
    path = model.save(tmp_path / "m")
    html = (path / "report.html").read_text()
    assert "Confusion matrix" in html and "Per class" in html and "transfer vs scratch" in html
    assert "<script" not in html


def test_report_command_adds_the_assessment(capsys, monkeypatch, train_csv, test_csv, tmp_path):
    import tenni
    from tenni.cli import main

    tenni.fit(train_csv, test=test_csv, strategy="probe").save(tmp_path / "m")
    monkeypatch.setattr(sys, "argv", ["tenni", "report", str(tmp_path / "m"), "--data", str(train_csv)])
    main()
    html = (tmp_path / "m" / "report.html").read_text()
    assert "Assessment (before training)" in html and "recommended" in html


def test_confusion_table_is_html_with_counts_and_shades():
    from tenni.evaluation.report import confusion_table

    html_text = confusion_table(["天気", "<b>sport</b>"], [[9, 1], [0, 5]])
    assert "天気" in html_text and "&lt;b&gt;sport&lt;/b&gt;" in html_text and "<b>sport" not in html_text
    cells = re.findall(r"rgba\(31,119,180,([0-9.]+)\)[^>]*>(\d+)<", html_text)
    assert cells == [("0.9", "9"), ("0.1", "1"), ("0.0", "0"), ("1.0", "5")]
    many = confusion_table([f"class{i}" for i in range(30)], np.eye(30, dtype=int).tolist())
    assert "<th>29</th>" in many and "29: class29" in many


def test_curve_interval_widens_by_its_own_backtest_error():
    """A curve that keeps climbing (log-linear) is not a saturating power law: the fit to the first budgets misses
    the last one, and the forecast interval must widen for it; a true power law keeps a tight interval."""
    budgets = [2, 4, 8, 16]
    rng = np.random.default_rng(0)
    law = PowerLaw(a=0.92, b=0.6, c=0.7)
    shapes = {"power": law, "loglinear": lambda n: 0.5 + 0.08 * np.log2(n)}
    width = {}
    for name, f in shapes.items():
        per_seed = np.array([[f(n) + rng.normal(0, 0.005) for n in budgets] for _ in range(3)])
        forecast = summarise_curve("probe", budgets, per_seed, [64]).forecast["64"]
        width[name] = forecast["high"] - forecast["low"]
        if name == "power":
            assert forecast["low"] <= float(law(64)) <= forecast["high"]
    assert width["loglinear"] > 2 * width["power"]


def test_curve_interval_stays_sane_when_the_last_budgets_are_close():
    """The smallest class's size is added as a last budget (17 after 16): the backtest must still step by a
    doubling, or seed noise between 16 and 17 would be multiplied ~20x into the interval."""
    law = PowerLaw(a=0.92, b=0.6, c=0.7)
    rng = np.random.default_rng(1)
    budgets = [2, 4, 8, 16, 17]
    per_seed = np.array([[float(law(n)) + rng.normal(0, 0.01) for n in budgets] for _ in range(3)])
    forecast = summarise_curve("probe", budgets, per_seed, [68]).forecast["68"]
    assert forecast["high"] - forecast["low"] < 0.2
    assert forecast["low"] <= float(law(68)) <= forecast["high"]
