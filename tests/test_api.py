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


def test_texts_without_words_fit_and_assess():
    """Emoji-only or one-character texts have no word of two letters: the TF-IDF baseline reads characters."""
    from tenni.assess import assess

    texts, labels = ["😀😀", "😡", "🎉🎉", "💀"] * 4, ["a", "b"] * 8
    model = tenni.fit((texts, labels), strategy="probe", evaluation="holdout", test_size=0.5)
    scratch = next(r for r in model.metrics["results"] if r["strategy"] == "scratch")
    assert scratch["accuracy"] == 1.0  # each emoji is one class: characters separate them
    assert assess((texts[:8], labels[:8]), backbones="text/minilm").recommendation["strategy"]


def test_predict_reads_texts_and_refuses_what_is_not_text(train_data):
    import pandas as pd
    import pytest

    from tenni.errors import DataError

    model = tenni.fit(train_data, strategy="scratch", baseline=False)
    frame = pd.DataFrame({"id": [1, 2], "text": ["the referee blew the whistle", "rain and wind tomorrow"]})
    assert model.predict(frame) == model.predict(list(frame["text"]))  # the text column, not the column names
    assert model.predict("a single text") == model.predict(["a single text"])
    assert model.predict(pd.DataFrame({"tweet": ["rain and wind"]})) == model.predict(["rain and wind"])
    for bad, message in [(None, "cannot predict on NoneType"), (5, "cannot predict on int"),
                         (["fine", None], "item 1: missing"), (["fine", pd.NA], "item 1: missing"),
                         (np.array([["a", "b"], ["c", "d"]]), "shape (2, 2)")]:
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model.predict(bad)


def test_classifier_checks_its_inputs_like_scikit_learn(train_data):
    import pytest
    from sklearn.exceptions import NotFittedError

    from tenni.errors import DataError

    texts, labels = train_data
    clf = tenni.TenniClassifier(strategy="scratch")
    with pytest.raises(NotFittedError):
        clf.predict(["a"])
    with pytest.raises(DataError, match="labels of shape"):
        clf.fit(texts, labels[:-2])
    with pytest.raises(DataError, match="missing label"):
        clf.fit(texts, labels[:-1] + [None])
    with pytest.raises(DataError, match="missing label"):
        clf.fit(texts, labels[:-1] + [np.float32("nan")])
    mixed = [True if y == labels[0] else 2 for y in labels]  # True and 1 must not merge: mixed types become text
    assert set(tenni.TenniClassifier(strategy="scratch").fit(texts, mixed).classes_) == {"True", "2"}
    column = clf.fit(texts, np.array(labels).reshape(-1, 1)).predict(texts[:5])
    assert list(column) == list(tenni.TenniClassifier(strategy="scratch").fit(texts, labels).predict(texts[:5]))


def test_option_values_of_the_wrong_type_are_refused_naming_the_option():
    import pytest

    from tenni.api import make_estimator
    from tenni.errors import ConfigError

    for strategy, config, message in [("probe", {"C": [1]}, "C needs a number"),
                                      ("lora", {"r": 2.5}, "r needs a whole"),
                                      ("scratch", {"analyzer": "bogus"}, "analyzer must be"),
                                      ("hybrid", {"weights": (2.0, -1.0)}, "weights must be shares"),
                                      ("auto", {"candidates": ("nope",)}, "'nope'")]:
        with pytest.raises(ConfigError, match=message):
            make_estimator(strategy, config=config)
    assert make_estimator("scratch", config={"ngram_max": 3.0}).config_.ngram_max == 3  # a whole float is fine
    # what worked before stays valid: numpy sequences and scalars, a share for min_df, one fold, 0/1 for a flag
    assert make_estimator("hybrid", config={"weights": np.linspace(0, 1, 5), "folds": 1}).config_.weights[-1] == 1.0
    assert make_estimator("scratch", config={"min_df": 0.05}).config_.min_df == 0.05
    assert make_estimator("setfit", config={"tune_embeddings": 0}).config_.tune_embeddings is False


def test_fit_takes_a_budget_as_the_cli_writes_it(train_data):
    import pytest

    from tenni.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="cannot read the duration"):
        tenni.fit(train_data, budget="soon")
    with pytest.raises(DataError, match="list of inputs is empty"):
        tenni.fit(([], []))
    model = tenni.fit(train_data, budget="3s", baseline=False)
    assert model.estimator.config_.budget == 3.0


def test_evaluate_warns_about_labels_never_seen_in_training(train_data, capsys):
    model = tenni.fit(train_data, strategy="scratch", baseline=False)
    metrics = model.evaluate((["a cat on the mat", "goal in the last minute"], ["pets", "sports"]))
    assert "never seen in training" in capsys.readouterr().err and "pets" in metrics["per_class"]
    assert all(type(k) is str for k in metrics["per_class"])


def test_saving_under_a_file_is_a_clear_error(train_data, tmp_path):
    import pytest

    from tenni.errors import TenniError

    (tmp_path / "afile").write_text("x")
    model = tenni.fit(train_data, strategy="scratch", baseline=False)
    with pytest.raises(TenniError, match="it is a file"):
        model.save(tmp_path / "afile" / "model")


def test_a_bare_strategy_keeps_integer_labels_for_scikit_learn(train_data, tmp_path):
    """The registered strategies are scikit-learn classifiers too: integer labels stay integers, so scorers work."""
    from sklearn.model_selection import cross_val_score

    from tenni.strategies import get_strategy_class

    texts, labels = train_data
    ints = np.searchsorted(sorted(set(labels)), labels)
    scores = cross_val_score(get_strategy_class("scratch")(), np.array(texts), ints, cv=3)
    assert not np.isnan(scores).any() and scores.mean() > 0.6
    model = tenni.Model(get_strategy_class("scratch")().fit(texts, ints))
    assert model.labels == ["0", "1", "2"] and set(model.predict(texts[:6])) <= {"0", "1", "2"}
    assert tenni.load(model.save(tmp_path / "m")).predict(texts[:6]) == model.predict(texts[:6])


def test_scikit_learn_tags_say_the_input_is_texts():
    from sklearn.utils import get_tags

    from tenni.strategies import get_strategy_class

    for estimator in (tenni.TenniClassifier(), get_strategy_class("probe")()):
        tags = get_tags(estimator).input_tags
        assert tags.string and tags.one_d_array and not tags.two_d_array
