"""Self-training on an unlabeled pool and distillation into a fast student."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

import tenni
from tenni.errors import ConfigError

# each class has words the labels show (seen) and words only the pool and the test use (hidden); pool texts mix both
WORDS = {"north": (["glacier", "fjord", "tundra", "iceberg", "aurora"], ["reindeer", "sled", "parka", "blizzard",
                                                                          "igloo"]),
         "south": (["desert", "cactus", "oasis", "dune", "mirage"], ["camel", "sandal", "scorpion", "canyon",
                                                                      "sunburn"])}


def _texts(kind: str, per_class: int, seed: int):
    rng = random.Random(seed)
    texts, labels = [], []
    for label, (seen, hidden) in WORDS.items():
        for _ in range(per_class):
            if kind == "labeled":
                words = rng.sample(seen, 3)
            elif kind == "pool":
                words = rng.sample(seen, 2) + rng.sample(hidden, 2)
            else:
                words = rng.sample(hidden, 3)
            rng.shuffle(words)
            texts.append("we talked about the " + " and the ".join(words))
            labels.append(label)
    return texts, labels


def test_self_training_learns_what_only_the_pool_shows():
    """The test texts use words the labels never show; the pool links them to the labeled words."""
    train, pool, test = _texts("labeled", 6, 1), _texts("pool", 40, 2), _texts("test", 10, 3)
    model = tenni.fit(train, test=test, strategy="scratch", unlabeled=pool, baseline=False)
    rows = {r["strategy"]: r for r in model.metrics["results"]}
    with_pool, alone = rows["scratch + self-training"]["accuracy"], rows["scratch (labels only)"]["accuracy"]
    assert with_pool >= 0.9 and with_pool - alone >= 0.3
    rounds = model.metrics["self_training"]["rounds"]
    assert rounds[0]["kept"] > 0 and rounds[0]["pseudo_accuracy"] == 1.0  # the pool's hidden labels, for reporting


def test_a_majority_class_cannot_swallow_the_pool():
    from tenni.selftrain import select_pseudo_labels

    proba = np.array([[0.99, 0.01]] * 90 + [[0.05, 0.95]] * 10)
    chosen = select_pseudo_labels(proba, np.array(["a", "b"]), np.array([0.5, 0.5]), 0.9, budget=40)
    picked = proba[chosen].argmax(1)
    assert (picked == 0).sum() == 20 and (picked == 1).sum() == 10


def test_quotas_sum_to_the_budget_even_when_it_is_smaller_than_the_classes():
    from tenni.selftrain import class_quotas, select_pseudo_labels

    assert class_quotas(np.full(20, 0.05), 10).sum() == 10  # rounding each share alone: 20 quotas of 0
    assert class_quotas(np.array([0.5, 0.5]), 3).tolist() == [2, 1]  # not 2 + 2
    assert class_quotas(np.array([0.7, 0.2, 0.1]), 10).tolist() == [7, 2, 1]
    proba = np.eye(20) * 0.9 + 0.005
    assert len(select_pseudo_labels(proba, np.arange(20).astype(str), np.full(20, 0.05), 0.0, budget=10)) == 10


def test_a_pool_of_one_item_is_still_pseudo_labelled():
    from tenni.data import as_dataset
    from tenni.selftrain import SelfTrainConfig, self_train
    from tenni.strategies.scratch import TfidfScratch

    train, pool = as_dataset(_texts("labeled", 6, 1)), as_dataset((_texts("pool", 1, 2)[0][:1], None))
    result = self_train(TfidfScratch, train, pool, SelfTrainConfig(rounds=2), show=False)
    assert [r.kept for r in result.rounds] == [1, 1]


def test_pool_items_that_duplicate_the_test_data_are_left_out():
    train, pool, test = _texts("labeled", 6, 1), _texts("pool", 10, 2), _texts("test", 5, 3)
    leaky = (pool[0] + test[0][:3], pool[1] + test[1][:3])
    model = tenni.fit(train, test=test, strategy="scratch", unlabeled=leaky, rounds=1, baseline=False)
    assert model.metrics["self_training"]["dropped_leaks"] == 3
    assert model.data_summary["unlabeled_pool"] == 20


def test_the_leak_check_finds_the_same_items_a_chunk_at_a_time(tiny_backbone, monkeypatch):
    """A pool larger than a chunk is compared with the test data a chunk of features at a time: the same items,
    near duplicates (cosine) included, at the same positions as in one pass."""
    import tenni.selftrain
    from tenni.backbones import get_backbone
    from tenni.data import as_dataset

    test = as_dataset(_texts("test", 5, 3))
    near = [t + "!" for t in test.inputs[:2]]  # not the same text: found by cosine only
    pool = as_dataset((_texts("pool", 10, 2)[0][:7] + [test.inputs[3]] + near + _texts("pool", 5, 4)[0], None))
    space = get_backbone(str(tiny_backbone))
    whole, n_whole = tenni.selftrain.drop_test_leaks(pool, test, space, 0.97)
    monkeypatch.setattr(tenni.selftrain, "POOL_CHUNK", 4)
    chunked, n_chunked = tenni.selftrain.drop_test_leaks(pool, test, space, 0.97)
    assert n_whole == n_chunked >= 3 and list(chunked.inputs) == list(whole.inputs)
    assert test.inputs[3] not in chunked.inputs and not set(near) & set(chunked.inputs)


def test_distilled_student_is_faster_and_close(tiny_backbone, tmp_path):
    from .conftest import make_texts

    train, test = make_texts(10, seed=1), make_texts(6, seed=2)
    pool = make_texts(20, seed=5)[0]
    model = tenni.fit(train, test=test, strategy="probe", backbone=str(tiny_backbone), unlabeled=pool, rounds=1,
                      student="scratch", baseline=False)
    s = model.metrics["student"]
    assert s["kind"] == "scratch" and s["accuracy"] >= 0.5
    assert model.student is not None and model.student.strategy == "scratch"
    again = tenni.load(model.student.save(tmp_path / "student"))
    assert again.predict(test[0][:5]) == model.student.predict(test[0][:5])


def test_soft_targets_fit_the_teacher():
    from tenni.strategies.scratch import TfidfScratch

    texts, labels = _texts("pool", 20, 7)
    targets = np.array([[0.9, 0.1] if y == "north" else [0.2, 0.8] for y in labels])
    est = TfidfScratch().fit_soft(texts, targets, np.array(["north", "south"]))
    assert np.mean(est.predict(texts) == np.array(labels)) == 1.0


def test_options_without_a_pool_are_refused():
    with pytest.raises(ConfigError, match="need an unlabeled pool"):
        tenni.fit(_texts("labeled", 4, 1), rounds=2)
    with pytest.raises(ConfigError, match="need an unlabeled pool"):  # zero-shot too: not silently ignored
        tenni.fit(_texts("labeled", 4, 1)[0], labels=["north", "south"], student="probe")
    with pytest.raises(ConfigError, match="--unlabeled, --rounds do\\(es\\) not apply to --task anomaly"):
        tenni.fit(_texts("labeled", 4, 1), task="anomaly", unlabeled=_texts("pool", 4, 2)[0], rounds=2)


def test_cli_refuses_pool_options_it_would_ignore_and_a_student_folder_it_cannot_use(tmp_path, capsys,
                                                                                      monkeypatch):
    from .conftest import write_csv
    from .test_cli import run

    train = write_csv(tmp_path / "train.csv", *_texts("labeled", 6, 1))
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(_texts("pool", 20, 2)[0]) + "\n")
    code, _, err = run(capsys, monkeypatch, "fit", train, "--task", "generate", "--unlabeled", pool)
    assert code == 2 and "--unlabeled do(es) not apply to --task generate" in " ".join(err.split())
    theirs = tmp_path / "m-student"
    theirs.mkdir()
    (theirs / "report.txt").write_text("not a model")
    code, _, err = run(capsys, monkeypatch, "fit", train, "-s", "scratch", "--unlabeled", pool, "--student",
                       "scratch", "-o", tmp_path / "m")
    assert code == 2 and "m-student" in err and "not a tenni model directory" in " ".join(err.split())
    assert (theirs / "report.txt").read_text() == "not a model" and not (tmp_path / "m").exists()


def test_cli_self_training_saves_the_model_and_the_student(tmp_path, capsys, monkeypatch):
    from .conftest import write_csv
    from .test_cli import run

    train = write_csv(tmp_path / "train.csv", *_texts("labeled", 6, 1))
    test = write_csv(tmp_path / "test.csv", *_texts("test", 5, 3))
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(_texts("pool", 20, 2)[0]) + "\n")
    code, out, err = run(capsys, monkeypatch, "fit", train, "--test", test, "-s", "scratch", "--unlabeled", pool,
                         "--rounds", "1", "--student", "scratch", "--no-baseline", "--set", "C=10",
                         "-o", tmp_path / "m")
    assert code == 0, err
    assert "self-training on 40 unlabeled items" in out and "student (scratch)" in out
    assert re.search(r"student \(scratch\): accuracy \d\.\d{3} vs the teacher's \d\.\d{3}, \d+ predictions/s vs "
                     r"\d+ \(\d+\.\dx\)", " ".join(out.split()))
    assert (tmp_path / "m" / "tenni.json").exists() and (tmp_path / "m-student" / "tenni.json").exists()


def test_assess_says_whether_a_pool_is_likely_to_help():
    from tenni.assess import assess

    from .conftest import make_texts

    train = make_texts(6, seed=1)
    near = assess(train, backbones=["text/minilm"], unlabeled=make_texts(20, seed=4)[0]).self_training
    far = assess(train, backbones=["text/minilm"], unlabeled=[f"invoice {i} overdue: remit payment to account {i}"
                                                               for i in range(40)]).self_training
    assert near["pool_size"] == 60 and far["pool_size"] == 40
    assert near["far_share"] < far["far_share"] and "self-training" in near["verdict"]
    assert near["agreement"] > 0.5


def test_an_interrupted_self_training_resumes_after_its_last_round(tmp_path):
    from tenni.data import as_dataset
    from tenni.selftrain import SelfTrainConfig, self_train
    from tenni.strategies.scratch import TfidfScratch

    train, pool = as_dataset(_texts("labeled", 6, 1)), as_dataset((_texts("pool", 20, 2)[0], None))
    calls = {"predict": 0, "fit": 0}

    class Counting(TfidfScratch):
        def predict_proba(self, X):
            calls["predict"] += 1
            return super().predict_proba(X)

        def fit(self, X, y):
            calls["fit"] += 1
            if calls["fit"] == 3 and stop["now"]:  # teacher, round-1 student, then round 2's: killed
                raise KeyboardInterrupt
            return super().fit(X, y)

    stop = {"now": True}
    cfg = SelfTrainConfig(rounds=3)
    with pytest.raises(KeyboardInterrupt):
        self_train(Counting, train, pool, cfg, checkpoint=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "round-1.json").exists() and not (tmp_path / "ckpt" / "round-2.json").exists()
    stop["now"], calls["predict"], calls["fit"] = False, 0, 0
    result = self_train(Counting, train, pool, cfg, checkpoint=tmp_path / "ckpt")
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert calls["predict"] == 2 and calls["fit"] == 3  # rounds 2 and 3 only, after refitting round 1's student


def test_em_recovers_the_pool_prior_of_a_balanced_teacher():
    """A teacher trained class-balanced believes both classes equally likely; on a pool of 90% / 10% its
    probabilities, moved by the EM prior, pick the majority where it is unsure."""
    from tenni.selftrain import em_prior, shift_prior

    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.1  # 10% of class 1
    # a calibrated balanced teacher: likelihood ratio from a score that separates the classes imperfectly
    score = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    p1 = 1 / (1 + np.exp(-2 * score))
    proba = np.stack([1 - p1, p1], axis=1)
    prior = em_prior(proba, np.array([0.5, 0.5]))
    assert abs(prior[1] - 0.1) < 0.03
    shifted = shift_prior(proba, np.array([0.5, 0.5]), prior)
    assert np.mean(shifted.argmax(1) == y) > np.mean(proba.argmax(1) == y)


def test_a_pool_that_hurts_on_the_labeled_folds_is_not_used():
    from tenni.data import as_dataset
    from tenni.selftrain import SelfTrainConfig, cross_check
    from tenni.strategies.scratch import TfidfScratch

    train, pool = as_dataset(_texts("labeled", 8, 1)), as_dataset((_texts("pool", 20, 2)[0], None))
    n_labeled = len(train)

    class Misled(TfidfScratch):  # a student that learns the pool's errors: wrong wherever it saw pseudo-labels
        def fit(self, X, y):
            self.misled_ = len(X) > n_labeled
            return super().fit(X, y)

        def predict_proba(self, X):
            proba = super().predict_proba(X)
            return proba[:, ::-1] if self.misled_ else proba

    check = cross_check(Misled, train, pool, SelfTrainConfig())
    assert check["folds"] == 4 and not check["helps"]
    assert np.mean(check["student_accuracy"]) < np.mean(check["teacher_accuracy"])
    assert check["teacher_only"] > check["student_only"] and check["p_worse"] <= 0.1


def test_the_cross_check_does_not_skip_on_an_item_or_two():
    """A student a little lower on a few dozen held-out labels is noise, not evidence that the pool hurts: the
    decision is a one-sided sign test on the items the two models disagree on."""
    from tenni.selftrain import sign_test

    assert sign_test(2, 1) == 0.5 and sign_test(0, 0) == 1.0 and sign_test(0, 5) == 1.0
    assert abs(sign_test(6, 0) - 1 / 64) < 1e-12  # six losses and no win: 1 in 64 for a coin
    assert sign_test(22, 19) > 0.1 > sign_test(30, 14)


def test_a_run_on_another_backbone_does_not_resume_from_this_ones_pseudo_labels(tiny_backbone, monkeypatch):
    """The checkpoint of a self-training run is keyed by the backbone too: pseudo-labels a teacher on one backbone
    made must not be picked up (as finished rounds) by a run on another backbone over the same data."""
    import tenni.selftrain

    train, pool, test = _texts("labeled", 6, 1), _texts("pool", 10, 2), _texts("test", 5, 3)
    seen = []

    def stop(make, train, pool, cfg, *, teacher=None, checkpoint=None, **kwargs):
        seen.append(checkpoint)
        raise KeyboardInterrupt

    monkeypatch.setattr(tenni.selftrain, "self_train", stop)
    monkeypatch.setattr(tenni.selftrain, "drop_test_leaks", lambda pool, *args: (pool, 0))  # the same pool for both
    for backbone in (str(tiny_backbone), "text/minilm"):
        with pytest.raises(KeyboardInterrupt):
            tenni.fit(train, test=test, strategy="probe", backbone=backbone, unlabeled=pool[0], baseline=False,
                      selftrain={"check_folds": 0})
    assert len(seen) == 2 and seen[0] != seen[1]


def test_the_checkpoint_key_holds_the_students_defaults(tiny_backbone, monkeypatch):
    """A default that changes between versions (the probe's C did) must change the key: the key takes the students'
    whole config, defaults included, not only the options the caller gave (none here)."""
    import tenni.selftrain

    train, pool, test = _texts("labeled", 6, 1), _texts("pool", 10, 2), _texts("test", 5, 3)
    keyed = []
    real_key = tenni.selftrain.run_key

    def spy(strategy, options, *args, **kwargs):
        keyed.append(options)
        return real_key(strategy, options, *args, **kwargs)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tenni.selftrain, "run_key", spy)
    monkeypatch.setattr(tenni.selftrain, "self_train", stop)
    with pytest.raises(KeyboardInterrupt):
        tenni.fit(train, test=test, strategy="probe", backbone=str(tiny_backbone), unlabeled=pool[0],
                  baseline=False, selftrain={"check_folds": 0})
    assert keyed and {"C", "class_weight", "search_C"} <= set(keyed[0])


def test_a_student_that_cannot_learn_soft_labels_is_refused_before_the_rounds(image_folder, tiny_vit, tmp_path,
                                                                              monkeypatch):
    """``--student scratch`` on images (the CNN baseline has no soft-label fit) and an unknown student are one-line
    errors raised before any self-training round runs, not a traceback after them."""
    import tenni.selftrain

    from .conftest import make_images

    def never(*args, **kwargs):
        raise AssertionError("self-training ran before the student was checked")

    monkeypatch.setattr(tenni.selftrain, "self_train", never)
    pool = make_images(tmp_path / "pool", 3, seed=9)
    with pytest.raises(ConfigError, match="cannot be distilled on image data"):
        tenni.fit(image_folder / "train", test=image_folder / "test", strategy="probe", backbone=str(tiny_vit),
                  unlabeled=pool, student="scratch", baseline=False)
    train, test = _texts("labeled", 6, 1), _texts("test", 5, 3)
    with pytest.raises(ConfigError, match="unknown student"):
        tenni.fit(train, test=test, strategy="scratch", unlabeled=_texts("pool", 5, 2)[0], student="bert",
                  baseline=False)


def test_a_budget_with_a_pool_is_refused_for_strategies_other_than_auto_as_without_one():
    train, pool = _texts("labeled", 4, 1), _texts("pool", 4, 2)[0]
    for unlabeled in (None, pool):
        with pytest.raises(ConfigError, match="applies to --strategy auto only"):
            tenni.fit(train, strategy="scratch", budget=10, unlabeled=unlabeled)


def test_count_prior_follows_the_teachers_decisions_and_keeps_every_class():
    """Classify-and-count: the pool's shares as the teacher's argmax counts, never below a tenth of an even share.
    EM on the same under-confident probabilities runs to a boundary (a class share of 0), the failure that made
    counts the default."""
    from tenni.selftrain import count_prior, em_prior

    proba = np.array([[0.56, 0.44]] * 78 + [[0.47, 0.53]] * 22)  # a few-shot teacher: right, but unsure
    shares = count_prior(proba)
    np.testing.assert_allclose(shares, [0.78, 0.22])
    assert em_prior(proba, np.array([0.5, 0.5]))[1] < 0.01  # EM: the minority class vanishes
    only_one = count_prior(np.array([[0.9, 0.05, 0.05]] * 10))
    assert only_one.sum() == pytest.approx(1.0) and (only_one[1:] > 0).all()


def test_the_first_teacher_keeps_the_label_name_prior():
    """auto on word labels blends its winner with the label names; that blend, not the winner alone, labels the
    pool, so what the names know reaches the students. The one labeled text per class here says nothing about its
    class: only the names can label the pool."""
    from .conftest import make_texts

    one = (["a note from monday", "a note from tuesday", "a note from friday"], ["food", "sports", "weather"])
    pool, test = make_texts(15, seed=21), make_texts(6, seed=22)

    def run(names: bool):
        return tenni.fit(one, test=test, backbone="text/minilm", budget=5, unlabeled=pool, rounds=1,
                         label_names=names, baseline=False).metrics["self_training"]

    with_names, without = run(True), run(False)
    assert with_names["teacher"] == "probe + label-name prior (weight 0.5)" and without["teacher"] == "probe"
    named, blind = with_names["rounds"][0]["pseudo_accuracy"], without["rounds"][0]["pseudo_accuracy"]
    assert named >= 0.8 and named >= blind + 0.2


def test_a_skipped_self_training_keeps_the_labels_only_model_with_its_prior(monkeypatch):
    """Where the cross-check says the pool would not help, the model is the one the labels-only row measured:
    auto with its label-name prior, not its winner alone."""
    import tenni.selftrain

    from .conftest import make_texts

    monkeypatch.setattr(tenni.selftrain, "cross_check", lambda *a, **k: {
        "folds": 2, "helps": False, "teacher_accuracy": [1.0, 1.0], "student_accuracy": [0.5, 0.5],
        "teacher_only": 2, "student_only": 0, "p_worse": 0.25})
    model = tenni.fit(make_texts(1, seed=6), test=make_texts(6, seed=22), backbone="text/minilm", budget=5,
                      unlabeled=make_texts(15, seed=21), rounds=1, baseline=False)
    st = model.metrics["self_training"]
    assert st["skipped"] and not st["rounds"]
    assert model.estimator.name == "auto" and model.estimator.prior_ is not None
    rows = {r["strategy"]: r["accuracy"] for r in model.metrics["results"]}
    assert rows["probe + self-training"] == rows["auto (probe) (labels only)"]


def test_the_pool_labelled_as_a_job_gives_the_same_self_training(tmp_path):
    """The pool labelled shard by shard as a scale-out job (the local engine here; Ray in tests/distributed) keeps
    the same pseudo-labels as labelling it in this process, and a finished round's job is not run again."""
    from tenni.data import as_dataset
    from tenni.distributed import ClusterLabeler
    from tenni.selftrain import SelfTrainConfig, self_train
    from tenni.strategies.scratch import TfidfScratch

    train, pool = as_dataset(_texts("labeled", 6, 1)), as_dataset((_texts("pool", 30, 2)[0], None))
    test = _texts("test", 10, 3)
    cfg = SelfTrainConfig(rounds=2)
    here = self_train(TfidfScratch, train, pool, cfg, checkpoint=tmp_path / "here")
    job = ClusterLabeler("local", rows_per_shard=16)
    there = self_train(TfidfScratch, train, pool, cfg, checkpoint=tmp_path / "job", labeler=job)
    assert [r.kept_per_class for r in there.rounds] == [r.kept_per_class for r in here.rounds]
    assert list(there.estimator.predict(test[0])) == list(here.estimator.predict(test[0]))
    assert [s["shards"] for s in job.summaries] == [4, 4] and job.summaries[0]["items"] == len(pool)
    left = sorted(p.name for p in (tmp_path / "job").iterdir())
    assert left == ["round-1.json", "round-2.json"]  # each saved round's job files, then the pool copy, removed
    first = job(there.estimator, pool, 3, tmp_path / "job")
    again = job(there.estimator, pool, 3, tmp_path / "job")  # a round labelled again: its finished shards are kept
    assert job.summaries[-1]["shards_run"] == 0 and np.array_equal(first, again)


def test_items_the_labeler_could_not_label_are_never_pseudo_labelled(tmp_path):
    import json

    from tenni.data import as_dataset
    from tenni.selftrain import SelfTrainConfig, label_locally, select_pseudo_labels, self_train
    from tenni.strategies.scratch import TfidfScratch

    train, pool = as_dataset(_texts("labeled", 6, 1)), as_dataset((_texts("pool", 20, 2)[0], None))

    def holes(teacher, pool, round_no, workdir):
        proba = label_locally(teacher, pool, round_no, workdir)
        proba[:5] = np.nan  # rejected by the job (an undecodable row, say)
        return proba

    result = self_train(TfidfScratch, train, pool, SelfTrainConfig(rounds=1), checkpoint=tmp_path, labeler=holes)
    kept = json.loads((tmp_path / "round-1.json").read_text())["indices"]
    assert result.rounds[0].kept == len(pool) - 5 and min(kept) >= 5
    # and where the budget would reach them: confident rows the labeler marked unusable are still left out
    proba = np.array([[0.99, 0.01]] * 5 + [[0.6, 0.4]] * 5)
    usable = np.array([False] * 5 + [True] * 5)
    chosen = select_pseudo_labels(proba, np.array(["a", "b"]), np.array([1.0, 0.0]), 0.0, budget=10, usable=usable)
    assert chosen.tolist() == [5, 6, 7, 8, 9]


def test_pool_engine_options_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch):
    from .conftest import write_csv
    from .test_cli import run

    train = write_csv(tmp_path / "train.csv", *_texts("labeled", 6, 1))
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(_texts("pool", 5, 2)[0]) + "\n")
    for extra, message in ((["--unlabeled", pool, "--actors", "2"], "--pool-engine ray"),
                           (["--unlabeled", pool, "--pool-engine", "spark"], "unknown pool"),
                           (["--pool-engine", "ray"], "add --unlabeled POOL")):
        code, _, err = run(capsys, monkeypatch, "fit", train, "-s", "scratch", *extra)
        assert code == 2 and message in err and "Traceback" not in err
    from tenni.distributed import ClusterLabeler

    with pytest.raises(ConfigError, match="labels an unlabeled pool"):
        tenni.fit(_texts("labeled", 4, 1), pool_labeler=ClusterLabeler("local"))
    with pytest.raises(ConfigError, match="at least 1"):
        ClusterLabeler("ray", actors=0)
    with pytest.raises(ConfigError, match="ray engine"):
        ClusterLabeler("local", address="auto")


def test_a_self_trained_hybrids_students_vote_evenly_unless_told_otherwise():
    """A hybrid's students blend the probe and TF-IDF evenly rather than re-choosing the weight by a CV that would
    score pseudo-labels; a weight the caller gives still wins."""
    train, pool, test = _texts("labeled", 6, 1), _texts("pool", 20, 2), _texts("test", 5, 3)
    common = {"test": test, "strategy": "hybrid", "backbone": "text/minilm", "unlabeled": pool[0],
              "baseline": False, "rounds": 1, "selftrain": {"check_folds": 0}}
    model = tenni.fit(train, **common)
    assert model.estimator.weight_ == 0.5 and tuple(model.estimator.config_.weights) == (0.5,)
    assert model.metrics["self_training"]["rounds"][0]["kept"] == 40
    told = tenni.fit(train, config={"weights": (1.0,)}, **common)
    assert told.estimator.weight_ == 1.0


def test_the_distilled_student_is_not_re_weighted_on_an_imbalanced_pool():
    """The student fits the teacher's probabilities as they are: weighting them again by inverse class mass (the
    heads' 'balanced' default) on a pool that is 90% one class tipped this student to the minority everywhere."""
    from tenni.data import as_dataset
    from tenni.selftrain import distill
    from tenni.strategies.scratch import TfidfScratch

    def imbalanced(kind, seed):
        texts, labels = _texts(kind, 60, seed)
        keep = [i for i, y in enumerate(labels) if y == "north"] + [i for i, y in enumerate(labels) if y == "south"][:6]
        return [texts[i] for i in keep], [labels[i] for i in keep]

    train = as_dataset(_texts("labeled", 6, 1))
    pool, test = as_dataset((imbalanced("pool", 2)[0], None)), imbalanced("test", 3)
    teacher = TfidfScratch().fit(train.inputs, train.labels)
    student = distill(teacher, "scratch", train, pool, backbone="text/minilm")
    assert student.config_.class_weight is None
    assert np.mean(np.asarray(student.predict(test[0])) == np.asarray(test[1])) >= 0.9


def test_a_config_dataclass_still_fits_with_a_pool():
    """A caller's config dataclass (every option fixed) goes to the students as it is."""
    from tenni.strategies.scratch import ScratchConfig

    model = tenni.fit(_texts("labeled", 6, 1), test=_texts("test", 5, 3), strategy="scratch",
                      config=ScratchConfig(C=5.0), unlabeled=_texts("pool", 10, 2)[0], rounds=1, baseline=False)
    assert model.estimator.config_.C == 5.0


def test_check_alpha_zero_never_runs_the_cross_check(monkeypatch):
    import tenni.selftrain

    monkeypatch.setattr(tenni.selftrain, "cross_check", lambda *a, **k: pytest.fail("the check ran"))
    model = tenni.fit(_texts("labeled", 6, 1), test=_texts("test", 5, 3), strategy="scratch",
                      unlabeled=_texts("pool", 10, 2)[0], rounds=1, baseline=False, selftrain={"check_alpha": 0})
    assert model.metrics["self_training"]["check"] is None and not model.metrics["self_training"]["skipped"]


def test_speed_is_timed_after_a_warm_up_and_without_the_feature_cache(tiny_backbone):
    """The teacher's first call may load its backbone's weights: that must not count as prediction time; the
    measurement reads no feature cache, and the backbone gets its own cache back."""
    from tenni.backbones import get_backbone
    from tenni.choose import make_estimator
    from tenni.selftrain import predictions_per_second

    from .conftest import make_texts

    texts, labels = make_texts(10, seed=1)
    probe = make_estimator("probe", str(tiny_backbone), None, 0, "text").fit(texts, labels)
    backbone = get_backbone(probe.backbone)
    own = backbone._cache
    calls = []
    original = probe.predict_proba

    def recording(inputs):
        calls.append((len(inputs), backbone._cache is own))
        return original(inputs)

    probe.predict_proba = recording
    assert predictions_per_second(probe, texts) > 0
    assert calls == [(8, False), (len(texts), False)]
    assert backbone._cache is own


def test_a_pool_on_a_frozen_backbone_is_encoded_once_as_a_job(tiny_backbone, tmp_path, monkeypatch):
    """With a pool engine and a probe, the pool's features are one embedding job imported into this machine's
    cache: the leak check, the rounds and the students read them, so no pool item is encoded twice (before: once
    here for the leak check, then again by the cluster in every round), and the model is the same."""
    from tenni.backbones.text import TextBackbone
    from tenni.distributed import ClusterLabeler

    monkeypatch.setenv("TENNI_CACHE_DIR", str(tmp_path / "cache"))  # nothing of this pool cached yet
    encoded = []
    real = TextBackbone.embed

    def counting(self, texts, batch_size=64):
        encoded.extend(texts)
        return real(self, texts, batch_size)

    monkeypatch.setattr(TextBackbone, "embed", counting)
    train, test = _texts("labeled", 6, 1), _texts("test", 5, 3)
    pool = list(dict.fromkeys(_texts("pool", 20, 2)[0]))
    options = dict(test=test, strategy="probe", backbone=str(tiny_backbone), unlabeled=pool, baseline=False,
                   selftrain={"check_folds": 0})
    job = ClusterLabeler("local", rows_per_shard=8)
    there = tenni.fit(train, pool_labeler=job, **options)
    assert sorted(t for t in encoded if t in set(pool)) == sorted(pool)  # each pool item once, by the job
    assert len(job.summaries) == 1 and job.summaries[0]["items"] == len(pool)  # no labelling jobs: a head, here
    assert not list((tmp_path / "cache" / "selftrain").glob("pool-features-*"))  # the job's files, once imported
    encoded.clear()
    here = tenni.fit(train, **options)  # the same run labelled in this process: every feature from the cache
    assert not [t for t in encoded if t in set(pool)]
    assert here.metrics["self_training"]["rounds"][-1]["kept_per_class"] == \
        there.metrics["self_training"]["rounds"][-1]["kept_per_class"]
    assert here.predict(test[0]) == there.predict(test[0])


def test_a_strategy_without_a_backbone_still_labels_the_pool_as_jobs(tmp_path):
    from tenni.distributed import ClusterLabeler

    job = ClusterLabeler("local", rows_per_shard=16)
    tenni.fit(_texts("labeled", 6, 1), test=_texts("test", 5, 3), strategy="scratch",
              unlabeled=_texts("pool", 10, 2)[0], baseline=False, pool_labeler=job, selftrain={"check_folds": 0})
    assert len(job.summaries) == 2 and all(s["items"] == 20 for s in job.summaries)  # one labelling job a round


def test_a_run_that_stops_early_leaves_no_job_files(tmp_path):
    """No pool item confident enough: the run ends in round 1, and its labelling job's files go with it."""
    from tenni.data import as_dataset
    from tenni.distributed import ClusterLabeler
    from tenni.selftrain import SelfTrainConfig, self_train
    from tenni.strategies.scratch import TfidfScratch

    train, pool = as_dataset(_texts("labeled", 6, 1)), as_dataset((_texts("pool", 10, 2)[0], None))
    job = ClusterLabeler("local", rows_per_shard=8)
    result = self_train(TfidfScratch, train, pool, SelfTrainConfig(rounds=2, threshold=1.0), checkpoint=tmp_path,
                        labeler=job)
    assert [r.kept for r in result.rounds] == [0] and job.summaries[0]["items"] == len(pool)
    assert list(tmp_path.iterdir()) == []


def test_a_small_student_is_the_backbone_cut_to_one_layer_and_round_trips(tmp_path):
    """``student="small"``: MiniLM cut to its first layer, fine-tuned on the teacher's probabilities; it learns the
    task, and a saved student loads back as the same cut model with the same predictions."""
    from .conftest import make_texts

    train, test = make_texts(10, seed=1), make_texts(6, seed=2)
    model = tenni.fit(train, test=test, strategy="probe", backbone="text/minilm",
                      unlabeled=make_texts(20, seed=5)[0], rounds=1, student="small", baseline=False)
    s = model.metrics["student"]
    assert s["kind"] == "small" and s["accuracy"] >= 0.8
    fast = model.student.estimator
    assert fast.name == "finetune" and fast.config_.layers == 1 and fast.config_.class_weight is None
    assert fast._model.encoder.model.config.num_hidden_layers == 1 and len(fast._model.encoder.model.encoder.layer) == 1
    again = tenni.load(model.student.save(tmp_path / "student"))
    assert again.estimator._model.encoder.model.config.num_hidden_layers == 1
    np.testing.assert_allclose(again.predict_proba(test[0]), model.student.predict_proba(test[0]), atol=1e-5)


def test_finetune_fits_soft_targets(tiny_backbone):
    """Fine-tuning on a teacher's probabilities learns what their argmax says, class weights on or off."""
    from tenni.strategies.finetune import FineTune

    from .conftest import make_texts

    texts, labels = make_texts(12, seed=3)
    classes = np.unique(labels)
    targets = np.full((len(texts), len(classes)), 0.2 / (len(classes) - 1))
    targets[np.arange(len(texts)), np.searchsorted(classes, labels)] = 0.8
    for weight in (None, "balanced"):
        est = FineTune(backbone=str(tiny_backbone), config={"epochs": 8, "class_weight": weight, "layers": 1,
                                                            "head_init": "random", "learning_rate": 1e-3})
        est.fit_soft(texts, targets, classes)
        assert np.mean(est.predict(texts) == np.asarray(labels)) >= 0.8


def test_a_backbone_cut_to_more_layers_than_it_has_is_a_one_line_error(tiny_backbone):
    from tenni.errors import BackboneError
    from tenni.strategies.finetune import FineTune

    from .conftest import make_texts

    with pytest.raises(BackboneError, match="has 2 layers, fewer than the 5 asked for"):
        FineTune(backbone=str(tiny_backbone), config={"layers": 5}).fit(*make_texts(6, seed=1))


def test_a_small_student_on_images_is_refused_before_the_rounds(image_folder, tiny_vit, tmp_path, monkeypatch):
    import tenni.selftrain

    from .conftest import make_images

    monkeypatch.setattr(tenni.selftrain, "self_train", lambda *a, **k: pytest.fail("rounds ran"))
    with pytest.raises(ConfigError, match="student 'small' cannot be distilled on image data.*probe"):
        tenni.fit(image_folder / "train", test=image_folder / "test", strategy="probe", backbone=str(tiny_vit),
                  unlabeled=make_images(tmp_path / "pool", 3, seed=9), student="small", baseline=False)


def test_a_small_student_on_a_frozen_backbone_is_refused_before_the_rounds(monkeypatch):
    """The multilingual backbone is frozen (a C engine): a student that fine-tunes it is a one-line error before any
    round, naming the backbone and the student that works."""
    import tenni.selftrain

    monkeypatch.setattr(tenni.selftrain, "self_train", lambda *a, **k: pytest.fail("rounds ran"))
    with pytest.raises(ConfigError, match="'text/e5-small-multilingual' is frozen") as err:
        tenni.fit(_texts("labeled", 6, 1), test=_texts("test", 5, 3), strategy="probe",
                  backbone="text/e5-small-multilingual", unlabeled=_texts("pool", 5, 2)[0], student="small",
                  baseline=False)
    assert "--student scratch" in err.value.hint


def test_the_distilled_students_pass_over_the_pool_runs_through_the_pool_labeler():
    """With a pool labeler (a scale-out job), the distillation's labelling of the pool is one more job, not a pass
    in this process; its files are removed once the probabilities are back."""
    from tenni._paths import cache_dir
    from tenni.distributed import ClusterLabeler

    job = ClusterLabeler("local", rows_per_shard=16)
    pool = _texts("pool", 20, 2)[0]
    model = tenni.fit(_texts("labeled", 6, 1), test=_texts("test", 5, 3), strategy="scratch", unlabeled=pool,
                      rounds=2, student="scratch", pool_labeler=job, baseline=False,
                      selftrain={"check_folds": 0})
    assert len(job.summaries) == 3 and [s["items"] for s in job.summaries] == [40, 40, 40]
    assert model.metrics["student"]["accuracy"] >= 0.9
    assert not [p for p in (cache_dir() / "selftrain").rglob("*") if p.name.startswith(("round-0-", "pool."))]


def test_the_soft_loss_on_one_hot_targets_is_the_weighted_cross_entropy():
    """One loss for both: on one-hot targets the soft share is the class-weighted share, and two ranks' shares add up
    to the whole batch's loss."""
    import torch

    from tenni.strategies._parallel import soft_loss_share, weighted_loss_share

    torch.manual_seed(0)
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    for weight in (None, torch.tensor([0.5, 1.0, 2.0])):
        whole = soft_loss_share(logits, onehot, weight, onehot)
        assert torch.allclose(whole, weighted_loss_share(logits, y, weight, y))
        halves = soft_loss_share(logits[:2], onehot[:2], weight, onehot) + soft_loss_share(logits[2:], onehot[2:],
                                                                                           weight, onehot)
        assert torch.allclose(halves, whole)


def test_embedding_a_pool_into_a_callers_folder_leaves_its_other_files(tiny_backbone, tmp_path, monkeypatch):
    """``ClusterLabeler.embed(workdir=...)`` removes the job's files once imported, never the folder's own."""
    from tenni.data import as_dataset
    from tenni.distributed import ClusterLabeler

    monkeypatch.setenv("TENNI_CACHE_DIR", str(tmp_path / "cache"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    pool = as_dataset((list(dict.fromkeys(_texts("pool", 5, 2)[0])), None))
    ClusterLabeler("local", rows_per_shard=8).embed(pool, str(tiny_backbone), workdir=mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_pool_needs_no_column_named_by_label_col(tiny_backbone, tmp_path):
    """``--label-col`` names the labeled file's column; a pool (a .txt file here) has none and is still read."""
    texts, labels = _texts("labeled", 6, 1)
    data = tmp_path / "labeled.csv"
    data.write_text("text,category\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels)))
    before = data.read_bytes()
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(dict.fromkeys(_texts("pool", 8, 2)[0])) + "\n")
    model = tenni.fit(str(data), test=_texts("test", 5, 3), strategy="probe", backbone=str(tiny_backbone),
                      unlabeled=str(pool), baseline=False, label_col="category",
                      selftrain={"check_folds": 0})
    assert model.metrics["self_training"]["rounds"]
    assert data.read_bytes() == before
    import pandas as pd

    from tenni.data import read_pool

    table = pd.DataFrame({"text": ["a b", "c d"], "label": ["north", None]})  # a label column only partly filled
    assert read_pool(table).labels is None


def test_the_checkpoint_key_follows_a_pool_files_bytes_not_its_path(tmp_path):
    """An image edited in place is another run (its saved rounds are not reused); a renamed one is the same."""
    import os

    from tenni.data import Dataset
    from tenni.selftrain import SelfTrainConfig, run_key

    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(bytes([i]) * 64)
    train = Dataset(inputs=[str(f) for f in files[:2]], labels=["a", "b"], modality="image")

    def key():
        return run_key("probe", {}, train, Dataset(inputs=[str(files[2])], modality="image"), SelfTrainConfig(), 0)

    before = key()
    files[2].write_bytes(b"\xff" * 64)
    os.utime(files[2], ns=(1, 1))  # another mtime: the content hash is not a memo of the old bytes
    edited = key()
    renamed = tmp_path / "moved.png"
    files[2].rename(renamed)
    files[2] = renamed
    assert edited != before and key() == edited
