"""Checkpoints of the training loop: a run interrupted after an epoch and resumed ends with the model the
uninterrupted run trains; a checkpoint of other data is not used; the CLI keeps them in OUTPUT.partial."""

from __future__ import annotations

import numpy as np
import pytest

import tenni
from tenni.strategies import _training

from ..conftest import run_cli

CONFIG = {"epochs": 3, "min_steps": 1, "max_epochs": 3, "max_length": 32, "batch_size": 8, "patience": 10}


class Stop(KeyboardInterrupt):
    pass


def interrupt_after(monkeypatch, epoch: int) -> list:
    """Makes training stop (as Ctrl-C would) right after the checkpoint of ``epoch`` is written."""
    saved = []
    original = _training.save_training_state

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        saved.append(kwargs["epoch"])
        if kwargs["epoch"] == epoch:
            raise Stop

    monkeypatch.setattr(_training, "save_training_state", save_then_stop)
    return saved


def fit(train_data, backbone, **kwargs):
    return tenni.fit(train_data, strategy="finetune", backbone=str(backbone), config=CONFIG, baseline=False,
                     evaluation="holdout", **kwargs)


def test_a_resumed_run_ends_with_the_uninterrupted_model(train_data, test_data, tiny_backbone, tmp_path,
                                                         monkeypatch):
    reference = fit(train_data, tiny_backbone)
    assert reference.estimator.training_["epochs_run"] == 3
    ckpt = tmp_path / "run.partial"
    saved = interrupt_after(monkeypatch, 2)
    with pytest.raises(Stop):
        fit(train_data, tiny_backbone, checkpoint_dir=ckpt)
    assert saved == [1, 2] and (ckpt / "train-1" / "state.safetensors").is_file()
    monkeypatch.undo()
    resumed = fit(train_data, tiny_backbone, checkpoint_dir=ckpt, resume=True)
    assert resumed.estimator.training_["resumed_after_epoch"] == 2
    assert resumed.estimator.training_["epochs_run"] == 3
    assert [h["train_loss"] for h in resumed.estimator.training_["history"]] == pytest.approx(
        [h["train_loss"] for h in reference.estimator.training_["history"]], abs=1e-6)
    texts = test_data[0]
    np.testing.assert_allclose(resumed.predict_proba(texts), reference.predict_proba(texts), atol=1e-5)


def test_without_resume_the_old_checkpoints_are_dropped_and_training_starts_over(train_data, tiny_backbone,
                                                                                tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "run.partial"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Stop):
        fit(train_data, tiny_backbone, checkpoint_dir=ckpt)
    monkeypatch.undo()
    model = fit(train_data, tiny_backbone, checkpoint_dir=ckpt)
    assert "resumed_after_epoch" not in model.estimator.training_
    assert "starting over" in capsys.readouterr().err


def test_a_checkpoint_of_other_data_is_not_resumed(train_data, tiny_backbone, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "run.partial"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Stop):
        fit(train_data, tiny_backbone, checkpoint_dir=ckpt)
    monkeypatch.undo()
    texts, labels = train_data
    model = fit((texts[::-1], labels[::-1]), tiny_backbone, checkpoint_dir=ckpt, resume=True)
    assert "resumed_after_epoch" not in model.estimator.training_
    assert "belongs to another training" in capsys.readouterr().err


def test_a_folder_that_is_not_a_checkpoint_folder_is_refused(train_data, tiny_backbone, tmp_path):
    ckpt = tmp_path / "mine"
    ckpt.mkdir()
    (ckpt / "notes.txt").write_text("keep me")
    with pytest.raises(tenni.TenniError, match="does not hold tenni's checkpoints"):
        fit(train_data, tiny_backbone, checkpoint_dir=ckpt)
    assert (ckpt / "notes.txt").read_text() == "keep me"


def test_cli_interrupted_fit_says_how_to_resume_and_resume_finishes(train_data, tiny_backbone, tmp_path,
                                                                   monkeypatch, capsys):
    import csv

    data = tmp_path / "train.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *zip(*train_data)])
    out = tmp_path / "model"
    args = ["fit", data, "-o", out, "--strategy", "finetune", "--backbone", tiny_backbone, "--no-baseline",
            "--evaluation", "holdout", *[x for k, v in CONFIG.items() for x in ("--set", f"{k}={v}")]]
    interrupt_after(monkeypatch, 1)
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 130
    assert "--resume" in err and "model.partial" in err
    assert not out.exists() and (tmp_path / "model.partial" / "train-1").is_dir()
    monkeypatch.undo()
    code, stdout, err = run_cli(capsys, monkeypatch, *args, "--resume")
    assert code == 0, err
    assert "resuming training from its checkpoint after epoch 1" in err
    assert tenni.load(out).predict(train_data[0][:3]) is not None
    assert not (tmp_path / "model.partial").exists()


def test_resume_without_output_is_one_line(capsys, monkeypatch, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\nb,y\n")
    code, _, err = run_cli(capsys, monkeypatch, "fit", data, "--resume")
    assert code == 2 and "--resume" in err and "Traceback" not in err


def test_setfit_resumes_mid_tuning_and_ends_with_the_uninterrupted_model(train_data, test_data, tiny_backbone,
                                                                         tmp_path, monkeypatch):
    from tenni.strategies import _resume

    config = {"max_length": 32, "examples_seen": 4, "batch_size": 8}

    def run(**kwargs):
        return tenni.fit(train_data, strategy="setfit", backbone=str(tiny_backbone), config=config, baseline=False,
                         evaluation="holdout", **kwargs)

    reference = run()
    ckpt = tmp_path / "run.partial"
    original, steps_saved = _resume.save_state, []

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        steps_saved.append(kwargs["meta"]["step"])
        raise Stop

    monkeypatch.setattr(_resume, "save_state", save_then_stop)
    with pytest.raises(Stop):
        run(checkpoint_dir=ckpt)
    monkeypatch.undo()
    total = reference.estimator.training_["steps"]
    assert 0 < steps_saved[0] < total
    resumed = run(checkpoint_dir=ckpt, resume=True)
    assert resumed.estimator.training_["resumed_after_step"] == steps_saved[0]
    np.testing.assert_allclose(resumed.predict_proba(test_data[0]), reference.predict_proba(test_data[0]), atol=1e-5)
