"""The Python API: fit with the baseline beside it, and the scikit-learn estimator."""

from __future__ import annotations

import numpy as np

import tenni


def test_fit_measures_transfer_and_baseline(train_csv, test_csv):
    model = tenni.fit(train_csv, test=test_csv, strategy="probe")
    rows = {r["strategy"]: r for r in model.metrics["results"]}
    assert set(rows) == {"probe", "scratch"}
    assert rows["probe"]["accuracy"] > 0.8
    assert "transfer_gain" in model.metrics
    assert model.metrics["test"]["confusion_matrix"]["labels"] == ["food", "sports", "weather"]
    assert model.data_summary["train_size"] == 48


def test_fit_without_test_holds_out_a_stratified_split(train_data):
    model = tenni.fit(train_data, strategy="probe", baseline=False, test_size=0.25, seed=1, evaluation="holdout")
    assert [r["strategy"] for r in model.metrics["results"]] == ["probe"]
    assert model.data_summary["test_size"] == 12


def test_classifier_works_in_cross_val_score(train_data):
    from sklearn.model_selection import cross_val_score

    texts, labels = train_data
    scores = cross_val_score(tenni.TenniClassifier(strategy="probe"), np.array(texts), np.array(labels), cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8


def test_classifier_in_a_grid_search(train_data):
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(tenni.TenniClassifier(strategy="scratch"), {"config": [{"C": 1.0}, {"C": 10.0}]}, cv=2)
    search.fit(*train_data)
    assert search.best_params_["config"]["C"] in (1.0, 10.0)


def test_classifier_to_model_saves(train_data, tmp_path):
    clf = tenni.TenniClassifier(strategy="scratch").fit(*train_data)
    clf.to_model().save(tmp_path / "m")
    assert tenni.load(tmp_path / "m").predict(["We ordered sushi and dessert"]) == ["food"]


def test_default_strategy_is_the_budgeted_race(train_data):
    model = tenni.fit(train_data, budget=4, test_size=0.25)
    assert model.strategy == "auto" and model.metrics["results"][0]["strategy"].startswith("auto (")
    assert model.estimator.config_.budget == 4


def test_without_a_test_file_cheap_strategies_get_repeated_cv(train_data):
    model = tenni.fit(train_data, strategy="probe")
    assert "repeated stratified CV" in model.metrics["evaluation"]
    probe, scratch = model.metrics["results"]
    assert probe["accuracy_low"] <= probe["accuracy"] <= probe["accuracy_high"]
    gain = model.metrics["transfer_gain"]
    assert gain["accuracy_low"] <= gain["accuracy"] <= gain["accuracy_high"]
    assert model.data_summary["train_size"] == 48, "after CV the model is trained on all the data"
    assert sum(model.metrics["test"]["per_class"][c]["support"] for c in model.labels) == 48


def test_integer_labels_keep_their_type_for_sklearn_scoring(train_data):
    from sklearn.model_selection import cross_val_score

    texts, labels = train_data
    ints = np.searchsorted(sorted(set(labels)), labels)
    clf = tenni.TenniClassifier(strategy="scratch").fit(texts, ints)
    assert clf.classes_.dtype.kind == "i" and clf.predict(texts[:3]).dtype.kind == "i"
    assert np.all(np.isfinite(cross_val_score(tenni.TenniClassifier(strategy="scratch"), np.array(texts), ints,
                                              cv=3)))


def test_empty_input_predicts_an_empty_result(train_data):
    model = tenni.fit(train_data, strategy="probe", evaluation="holdout")
    assert model.predict([]) == [] and model.predict_proba([]).shape == (0, 3)


def test_missing_values_in_memory_are_errors_not_classes():
    import pandas as pd
    import pytest

    from tenni.errors import DataError

    with pytest.raises(DataError, match="item 1: missing label"):
        tenni.fit(pd.DataFrame({"text": ["a b", "c d", "e f"], "label": ["x", None, "y"]}))
    assert tenni.data.as_dataset((["a", "b"], [1.0, "Ａ"])).labels == ["1", "A"]
