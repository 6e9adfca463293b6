"""One matrix over strategies: learn above chance, round-trip through the artifact, honour the sklearn contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

import tenni
from tenni.errors import ConfigError
from tenni.strategies import get_strategy_class, strategy_names

from ..conftest import FAST_CONFIGS

STRATEGIES = ["probe", "scratch", "hybrid", "finetune", "lora", "setfit"]


def test_every_strategy_is_registered():
    assert set(STRATEGIES) <= set(strategy_names())


@pytest.fixture(scope="module", params=STRATEGIES)
def fitted(request, train_data):
    name = request.param
    cls = get_strategy_class(name)
    est = cls(config=FAST_CONFIGS[name], seed=0)
    return est.fit(*train_data)


def test_learns_well_above_chance(fitted, test_data):
    texts, labels = test_data
    accuracy = float(np.mean(fitted.predict(texts) == np.asarray(labels)))
    assert accuracy >= 0.8, f"{fitted.name}: accuracy {accuracy:.2f} on 3 separable classes (chance 0.33)"


def test_probabilities_are_distributions(fitted, test_data):
    proba = fitted.predict_proba(test_data[0][:7])
    assert proba.shape == (7, 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba >= 0).all()


def test_save_load_gives_identical_predictions(fitted, test_data, tmp_path):
    model = tenni.Model(fitted)
    model.save(tmp_path / "m")
    loaded = tenni.load(tmp_path / "m")
    texts = test_data[0]
    assert loaded.labels == model.labels
    np.testing.assert_allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    assert loaded.predict(texts) == model.predict(texts)


def test_clone_keeps_hyperparameters_and_drops_fitted_state(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "classes_")


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown option"):
        get_strategy_class("probe")(config={"epochz": 3}).fit(["a b", "c d"], ["x", "y"])


def test_option_strings_from_the_cli_are_coerced():
    est = get_strategy_class("finetune")(config={"epochs": "3", "learning_rate": "1e-4", "head_init": "random"})
    assert est.config_.epochs == 3 and est.config_.learning_rate == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="needs a int"):
        get_strategy_class("finetune")(config={"epochs": "three"}).config_  # noqa: B018


def test_class_weights_rescue_the_minority_class():
    """With 5% positives, balanced weights keep recall on the rare class; the option is honoured."""
    rng = np.random.default_rng(0)
    common = [f"order {i} shipped on time with tracking" for i in range(60)]
    rare = [f"refund {i} requested because item arrived broken" for i in range(4)]
    texts, labels = common + rare, ["ok"] * 60 + ["problem"] * 4
    order = rng.permutation(len(texts))
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    est = get_strategy_class("scratch")(config={"class_weight": "balanced"}).fit(texts, labels)
    assert est.predict(["refund requested, item arrived broken"])[0] == "problem"


def test_lora_rejects_target_modules_the_backbone_lacks(train_data):
    cfg = dict(FAST_CONFIGS["lora"], target_modules=("no_such_layer",))
    with pytest.raises(ConfigError, match="target_modules"):
        get_strategy_class("lora")(config=cfg).fit(*train_data)


def test_hybrid_picks_tfidf_when_the_backbone_cannot_see_the_signal(tiny_backbone):
    """The label word sits past the tiny encoder's 64-token window: the probe sees identical texts, TF-IDF does
    not, so the CV blend must lean to TF-IDF."""
    filler = " ".join(["report"] * 100)
    texts = [f"{filler} alpha{i % 5}" for i in range(20)] + [f"{filler} beta{i % 5}" for i in range(20)]
    labels = ["a"] * 20 + ["b"] * 20
    est = get_strategy_class("hybrid")(backbone=str(tiny_backbone)).fit(texts, labels)
    assert est.weight_ <= 0.4
    assert np.mean(est.predict(texts) == np.asarray(labels)) == 1.0
    assert set(est.cv_) == {str(w) for w in est.config_.weights}


def test_a_single_hybrid_weight_is_the_weight_used(tiny_backbone, train_data):
    """``weights=(0.8,)`` fixes the blend at 0.8 (it was taken for "no CV" and became an even 0.5)."""
    for weights, expected in (((0.8,), 0.8), ((0.0,), 0.0)):
        est = get_strategy_class("hybrid")(backbone=str(tiny_backbone), config={"weights": weights}).fit(*train_data)
        assert est.weight_ == expected and est.cv_ == {}


def test_auto_races_within_a_tiny_budget_and_round_trips(train_data, test_data, tmp_path):
    """With 5 seconds, only the cheap candidates can run; the trained ones are stopped, never half-counted."""
    est = get_strategy_class("auto")(config={"budget": 5.0}).fit(*train_data)
    assert est.chosen_.name in {"probe", "hybrid"}
    assert est.race_["probe"]["scores"], "the incumbent always runs"
    for name in ("setfit", "lora", "finetune"):
        assert est.race_[name]["status"].startswith("stopped") and not est.race_[name]["scores"]
    assert est.race_[est.chosen_.name]["status"] == "chosen"
    accuracy = float(np.mean(est.predict(test_data[0]) == np.asarray(test_data[1])))
    assert accuracy >= 0.8
    tenni.Model(est).save(tmp_path / "m")
    loaded = tenni.load(tmp_path / "m")
    assert loaded.estimator.chosen_.name == est.chosen_.name
    np.testing.assert_allclose(loaded.predict_proba(test_data[0]), est.predict_proba(test_data[0]), atol=1e-6)


def test_auto_needs_a_margin_to_leave_the_probe():
    from tenni.strategies.auto import AutoConfig, AutoStrategy

    race = {"probe": {"scores": [0.90, 0.80]}, "hybrid": {"scores": [0.905, 0.80]},
            "lora": {"scores": [0.95]}}
    assert AutoStrategy._choose(race, AutoConfig(margin=0.01)) == "lora"   # +5 points on the fold it ran
    race["lora"]["scores"] = [0.905]
    assert AutoStrategy._choose(race, AutoConfig(margin=0.01)) == "probe"  # within the margin: keep the probe


def test_auto_does_not_choose_a_challenger_that_successive_halving_dropped():
    """sms_spam, 8 per class, seed 2: finetune lost to setfit and lora on folds 1-2 and was dropped, but its gain
    over the probe on those two folds (where the probe did worst) beat setfit's over all three."""
    from tenni.strategies.auto import AutoConfig, AutoStrategy

    race = {"probe": {"scores": [0.83, 0.83, 1.0]},
            "setfit": {"scores": [0.94, 0.94, 0.95], "status": "racing"},
            "finetune": {"scores": [0.92, 0.91], "status": "dropped after fold 2 (successive halving)"}}
    assert AutoStrategy._choose(race, AutoConfig(margin=0.01)) == "setfit"
    race["finetune"]["status"] = "racing"  # the same scores, stopped by the budget instead: compared on its folds
    assert AutoStrategy._choose(race, AutoConfig(margin=0.01)) == "finetune"
    # the survivor that beat it is out of the running (not eligible to refit, or stopped mid-fold): it may win again
    race["finetune"]["status"] = "dropped after fold 2 (successive halving)"
    without_survivor = {k: v for k, v in race.items() if k != "setfit"}
    assert AutoStrategy._choose(without_survivor, AutoConfig(margin=0.01)) == "finetune"
    race["setfit"]["scores"] = []
    assert AutoStrategy._choose(race, AutoConfig(margin=0.01)) == "finetune"


def test_auto_refuses_a_winner_whose_refit_would_overrun_the_budget(train_data, monkeypatch):
    """A challenger that wins its fold by far but took 2 s on two thirds of the data cannot be refitted on all of
    it within a 4 s budget: the probe is kept, and the race says why."""
    import random
    import time

    from tenni.strategies import auto, registry
    from tenni.strategies.probe import LinearProbe

    texts = train_data[0]
    labels = [random.Random(i).choice(["a", "b"]) for i in range(len(texts))]  # random: the probe is at chance
    oracle = dict(zip(texts, labels))

    class SlowOracle(LinearProbe):  # knows every label, but is slow
        name = "slow_oracle"

        def _fit(self, texts, y, cfg):
            time.sleep(2.0)
            super()._fit(texts, y, cfg)

        def _predict_proba(self, texts):
            return np.array([[float(oracle[t] == c) for c in self.classes_] for t in texts])

    monkeypatch.setitem(registry._ENTRIES, "slow_oracle", registry.entry_for_class(SlowOracle))
    monkeypatch.setattr(auto, "estimate_seconds", lambda *args, **kwargs: 0.1)  # a prior that underestimates
    est = get_strategy_class("auto")(config={"budget": 4.0, "candidates": ("probe", "slow_oracle")})
    est.fit(texts, labels)
    race = est.race_
    assert race["slow_oracle"]["scores"] == [1.0] and race["probe"]["scores"][0] < 0.9  # it would win by far
    assert race["slow_oracle"].get("eligible") is False
    assert est.chosen_.name == "probe" and "would not fit" in est.reason_


def test_auto_keeps_time_to_refit_the_leader(train_data, monkeypatch):
    """A cheap challenger's folds must not eat the time the leading (dearer) challenger needs for its refit.
    On a simulated clock, budget 100 s: 'dear' (a perfect oracle) takes 30 s a fit, so ~54 s to refit on all the
    data; 'cheap' (right 3 times in 4) takes 10 s. Without the reserve, cheap ran all its folds and dear, the
    better, could no longer be refitted in time."""
    import random
    import types

    from tenni.strategies import auto, registry
    from tenni.strategies.probe import LinearProbe

    texts = train_data[0]
    labels = [random.Random(i).choice(["a", "b"]) for i in range(len(texts))]
    truth = dict(zip(texts, labels))
    now = [0.0]
    monkeypatch.setattr(auto, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def oracle(label, seconds, wrong_every):
        class Oracle(LinearProbe):
            name = label

            def _fit(self, texts, y, cfg):
                now[0] += seconds
                super()._fit(texts, y, cfg)

            def _predict_proba(self, texts):
                flip = [i % wrong_every == 0 if wrong_every else False for i in range(len(texts))]
                return np.array([[float((truth.get(t) == c) != f) for c in self.classes_]
                                 for t, f in zip(texts, flip)])
        return Oracle

    monkeypatch.setitem(registry._ENTRIES, "dear", registry.entry_for_class(oracle("dear", 30, 0)))
    monkeypatch.setitem(registry._ENTRIES, "cheap", registry.entry_for_class(oracle("cheap", 10, 4)))
    monkeypatch.setattr(auto, "estimate_seconds", lambda name, *a, **k: {"dear": 30.0, "cheap": 10.0}.get(name, 0.1))
    est = get_strategy_class("auto")(config={"budget": 100.0, "candidates": ("probe", "dear", "cheap")})
    est.fit(texts, labels)
    race = est.race_
    assert len(race["dear"]["scores"]) == 1 and len(race["cheap"]["scores"]) == 1  # cheap's 2nd fold: no time
    assert race["cheap"]["status"].startswith("stopped")
    assert est.chosen_.name == "dear", est.reason_


def test_auto_prior_for_the_hybrid_counts_classes_and_script():
    """The hybrid's prior: many short English texts are cheap (word n-grams), the same characters of Japanese
    cost ~10x more (character n-grams), and more classes cost more logistic fits."""
    from tenni.strategies.auto import REFIT_SAFETY, AutoConfig, estimate_seconds

    # banking77 at 64 per class, a fold of two thirds: measured ~5 s; the default race must be able to try it
    fold = estimate_seconds("hybrid", 3245, 77, characters=193_000)
    assert fold + REFIT_SAFETY * fold * 1.5 < AutoConfig().budget
    assert estimate_seconds("hybrid", 384, 9, 481_000, unspaced=True) > 5 * estimate_seconds("hybrid", 384, 9, 481_000)
    assert estimate_seconds("hybrid", 1000, 77) > estimate_seconds("hybrid", 1000, 2)


def test_deadline_stops_training_loops(train_data):
    from tenni._deadline import BudgetExceeded, time_limit

    with pytest.raises(BudgetExceeded), time_limit(0.0):
        get_strategy_class("finetune")(config=FAST_CONFIGS["finetune"]).fit(*train_data)


def test_tuple_and_optional_options_from_the_cli_get_their_types():
    est = get_strategy_class("hybrid")(config={"weights": "0.3,0.7"})
    assert est.config_.weights == (0.3, 0.7)
    assert get_strategy_class("setfit")(config={"C": "2"}).config_.C == 2.0
    assert get_strategy_class("probe")(config={"C": "none"}).config_.C is None


def test_grouped_forward_equals_one_padded_batch_in_the_callers_order(tiny_backbone):
    """Training batches run in groups of similar length (less padding); outputs and gradients must be those of the
    whole batch padded at once, row for row in the order asked."""
    import torch

    from tenni.backbones import get_backbone
    from tenni.strategies._torch import Tokenized, load_encoder

    tokenizer, encoder, _ = load_encoder(get_backbone(str(tiny_backbone)), normalise=True)
    encoder.eval()
    texts = ["short", "a much longer text " * 6, "mid length text here", "x", "another one " * 3, "tiny words"]
    data = Tokenized(tokenizer, texts, 64)
    idx = np.array([4, 1, 0, 5, 2])
    whole = encoder(**data.batch(idx))
    grouped = data.forward_grouped(encoder, idx, group=2)
    assert torch.allclose(grouped, whole, atol=1e-5)
    grads = []
    for run in (lambda: encoder(**data.batch(idx)), lambda: data.forward_grouped(encoder, idx, group=2)):
        encoder.zero_grad()
        (run() * torch.arange(5.0)[:, None]).sum().backward()  # row weights: a wrong order changes the gradient
        grads.append(encoder.model.encoder.layer[0].attention.self.query.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_setfit_can_leave_the_token_embeddings_as_they_were(tiny_backbone, train_data):
    import torch

    from tenni.backbones import get_backbone
    from tenni.strategies._torch import load_encoder

    _, base, _ = load_encoder(get_backbone(str(tiny_backbone)))
    before = base.model.get_input_embeddings().weight.detach().clone()
    layer = base.model.encoder.layer[0].attention.self.query.weight.detach().clone()
    for tune in (False, True):
        est = get_strategy_class("setfit")(backbone=str(tiny_backbone), seed=0,
                                           config=dict(FAST_CONFIGS["setfit"], tune_embeddings=tune, max_pairs=48))
        est.fit(*train_data)
        after = est._encoder.model
        assert torch.equal(after.get_input_embeddings().weight.detach(), before) is not tune
        assert not torch.equal(after.encoder.layer[0].attention.self.query.weight.detach(), layer)


def test_text_finetune_ignores_the_media_only_head_warmup(tiny_backbone, train_data):
    """head_warmup_epochs is an image/audio option: a text fine-tune trains the same with or without it (as before
    the training loops were merged), with no head-only epochs."""
    config = dict(FAST_CONFIGS["finetune"], epochs=3, max_epochs=3)
    fits = [get_strategy_class("finetune")(backbone=str(tiny_backbone), config=dict(config, head_warmup_epochs=warm))
            .fit(*train_data) for warm in (0, 2)]
    assert all("head_only" not in record for record in fits[1].training_["history"])
    np.testing.assert_array_equal(fits[0].predict_proba(train_data[0]), fits[1].predict_proba(train_data[0]))


def test_probe_head_strength_follows_the_number_of_classes(tiny_backbone, train_data):
    from tenni.strategies import get_strategy_class
    from tenni.strategies.probe import head_strength

    assert head_strength(None, 2) == 1.0 and head_strength(None, 4) == 1.0  # few classes: the stronger penalty
    assert head_strength(None, 5) == 10.0 and head_strength(None, 77) == 10.0  # many: a weaker one
    assert head_strength(0.3, 77) == 0.3  # a value given wins
    probe = get_strategy_class("probe")
    assert probe(backbone=str(tiny_backbone), seed=0).fit(*train_data).C_ == 1.0  # 3 classes
    texts, labels = train_data
    many = [f"{label}{i % 5}" for i, label in enumerate(labels)]  # 15 classes
    assert probe(backbone=str(tiny_backbone), seed=0).fit(texts, many).C_ == 10.0
    searched = probe(backbone=str(tiny_backbone), seed=0, config={"search_C": True}).fit(texts, labels)
    assert searched.C_ in (0.1, 1.0, 10.0, 100.0)
