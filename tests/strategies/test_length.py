"""Long texts: the length policy, head/head+tail cuts and windows, setfit's in-batch loss, auto's token prior."""

from __future__ import annotations

import numpy as np
import pytest

from tenni.backbones.length import MAX_WINDOWS, choose_length, fit_rows, pool_rows
from tenni.errors import ConfigError

from ..conftest import make_texts


def test_length_is_a_percentile_of_the_token_counts_rounded_up_and_capped():
    counts = np.arange(1, 101)  # 1..100 tokens
    choice = choose_length(counts, cap=256, percentile=95)
    assert choice.max_length == 96  # 95th percentile 95.05 -> 96, a multiple of 8
    assert choice.source == "data" and choice.percentile_tokens == 96
    assert choice.longer_share == pytest.approx(0.04)
    assert choose_length(counts, cap=64).max_length == 64  # capped by the backbone
    assert choose_length(counts, cap=64).longer_share == pytest.approx(0.36)
    assert choose_length([3, 4, 5], cap=256).max_length == 16  # a floor for very short texts
    assert choose_length(counts, cap=256, percentile=50).max_length == 56


def test_max_length_overrides_the_data_and_is_checked_against_the_position_table():
    counts = np.full(50, 300)
    choice = choose_length(counts, cap=256, max_length=100)
    assert choice.max_length == 100 and choice.source == "max_length option" and choice.longer_share == 1.0
    assert choose_length(counts, cap=256, max_length=400, limit=512).max_length == 400  # above the cap: asked for
    with pytest.raises(ConfigError, match="max_length=600"):
        choose_length(counts, cap=256, max_length=600, limit=512)
    with pytest.raises(ConfigError, match="truncation"):
        choose_length(counts, cap=256, truncation="middle")
    assert choose_length(np.full(10, 20), cap=256, use_cap=True).max_length == 256  # the frozen probe


def test_head_head_tail_and_windows_cut_as_said():
    body = list(range(100, 150))  # 50 tokens
    pre, post = [1], [2]
    assert fit_rows(body[:8], 16, "head", pre, post) == [[1] + body[:8] + [2]]  # fits: untouched in every mode
    assert fit_rows(body[:8], 16, "windows", pre, post) == [[1] + body[:8] + [2]]
    (head,) = fit_rows(body, 18, "head", pre, post)
    assert head == [1] + body[:16] + [2]
    (both,) = fit_rows(body, 18, "head_tail", pre, post)
    assert both == [1] + body[:4] + body[-12:] + [2]  # a quarter from the opening, the rest from the end
    windows = fit_rows(body, 18, "windows", pre, post)
    assert all(w[0] == 1 and w[-1] == 2 and len(w) <= 18 for w in windows)
    assert [t for w in windows for t in w[1:-1]] == body[:48] + body[-16:]  # all read; the scrap of 2 tokens...
    assert windows[-1][1:-1] == body[-16:]  # ...is a whole last window that overlaps the one before
    even = fit_rows(body[:40], 18, "windows", pre, post)
    assert [t for w in even for t in w[1:-1]] == body[:40]  # 16 + 16 + 8: every token read once, in order
    assert len(fit_rows(list(range(16 * 20)), 18, "windows", pre, post)) == MAX_WINDOWS


def test_pool_rows_averages_each_texts_windows():
    values = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    np.testing.assert_allclose(pool_rows(values, np.array([0, 0, 1]), 2), [[2.0, 1.0], [5.0, 5.0]])
    import torch

    out = pool_rows(torch.as_tensor(values), np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(out.numpy(), [[2.0, 1.0], [5.0, 5.0]])


def test_windows_through_the_encoder_give_one_output_per_text(tiny_backbone):
    import torch

    from tenni.backbones import get_backbone
    from tenni.strategies._torch import Tokenized, load_encoder

    tokenizer, encoder, _ = load_encoder(get_backbone(str(tiny_backbone)))
    encoder.eval()
    long_text = " ".join(f"word{i}" for i in range(60))
    texts = ["short one", long_text, "another short text"]
    data = Tokenized(tokenizer, texts, 24, "windows")
    assert data.windowed and len(data) == 3 and len(data.rows) > 3
    with torch.no_grad():
        out = data.forward_grouped(encoder, [2, 1, 0], group=2)
        rows = [data.rows[r] for r in range(*data.row_spans[1])]
        by_hand = encoder(**data.pad(rows)).mean(0) if len({len(r) for r in rows}) == 1 else torch.stack(
            [encoder(**data.pad([r]))[0] for r in rows]).mean(0)
        alone = encoder(**data.pad([data.rows[data.row_spans[0][0]]]))[0]
    assert out.shape[0] == 3
    torch.testing.assert_close(out[1], by_hand, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[2], alone, atol=1e-5, rtol=1e-4)  # a short text is read as it is
    head = Tokenized(tokenizer, texts, 24, "head")
    assert not head.windowed and head.tokens() < data.tokens()


def test_frozen_features_of_each_reading_have_their_own_cache(tiny_backbone):
    from tenni.backbones import get_backbone

    backbone = get_backbone(str(tiny_backbone))
    long_text = " ".join(f"token{i} topic" for i in range(80))
    texts = ["a short text", long_text]
    default = backbone.encode(texts, show_progress=False)
    assert backbone.token_cap == 64  # its sentence-transformers config says 64
    same = backbone.encode(texts, show_progress=False, max_length=64, truncation="head")
    np.testing.assert_array_equal(default, same)  # the default reading is the old one (same cache)
    windows = backbone.encode(texts, show_progress=False, truncation="windows")
    head_tail = backbone.encode(texts, show_progress=False, truncation="head_tail")
    np.testing.assert_allclose(windows[0], default[0], atol=1e-5)  # nothing to cut: the same features
    assert not np.allclose(windows[1], default[1], atol=1e-4)
    assert not np.allclose(head_tail[1], default[1], atol=1e-4)
    assert backbone.reading(64, "windows").cache.dir != backbone.cache.dir


def test_probe_says_and_records_its_length(tiny_backbone, train_data, capsys):
    from tenni.strategies import get_strategy_class

    est = get_strategy_class("probe")(backbone=str(tiny_backbone), config={"truncation": "head_tail"}).fit(*train_data)
    assert est.length_["max_length"] == 64 and est.length_["truncation"] == "head_tail"
    assert "probe: 64 tokens per text" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_length=200"):  # its position table holds 128
        get_strategy_class("probe")(backbone=str(tiny_backbone), config={"max_length": 200}).fit(*train_data)
    with pytest.raises(ConfigError, match="truncation"):
        get_strategy_class("probe")(backbone=str(tiny_backbone), config={"truncation": "tail"}).fit(*train_data)


def test_setfit_batch_loss_learns_on_the_tiny_backbone(tiny_backbone):
    from tenni.strategies import get_strategy_class

    train, test = make_texts(12, seed=3), make_texts(10, seed=4)
    est = get_strategy_class("setfit")(backbone=str(tiny_backbone), seed=0,
                                       config={"learning_rate": 1e-3, "examples_seen": 24}).fit(*train)
    accuracy = float(np.mean(est.predict(test[0]) == np.asarray(test[1])))
    assert accuracy >= 0.7, f"accuracy {accuracy:.2f} on 3 separable classes (chance 0.33)"
    assert est.training_["loss"] == "batch" and est.training_["steps"] == 24 * 36 // 16
    assert est.training_["learning_rate"] == pytest.approx(1e-3)  # a rate given is the rate used
    assert est.training_["texts_encoded"] == pytest.approx(24 * 36, rel=0.2)  # each text once per step it is in
    assert est.length_["source"] == "data" and est.length_["max_length"] <= 64


def test_setfit_batches_hold_positives_of_a_few_classes():
    from tenni.strategies.setfit import class_batches, examples_seen, in_batch_cosine_loss

    y = np.repeat(np.arange(5), 8)
    batches = class_batches(y, 16, 30, seed=0)
    assert len(batches) == 30
    for batch in batches:
        assert len(set(batch.tolist())) == len(batch)  # no text twice in a step
        counts = np.bincount(y[batch])
        assert counts.max() >= 2  # every batch has same-class pairs
    seen = np.bincount(np.concatenate(batches), minlength=len(y))
    assert seen.min() >= 8  # examples cycle: none is left out
    assert examples_seen(32) == 16 and examples_seen(10_000) == 4 and examples_seen(128) == pytest.approx(8)
    import torch

    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    assert float(in_batch_cosine_loss(emb, torch.tensor([0, 0, 1]))) == pytest.approx(0.0)
    assert float(in_batch_cosine_loss(emb, torch.tensor([0, 1, 1]))) > 0.4


def test_setfit_learning_rate_follows_the_steps_unless_given(tiny_backbone, train_data):
    from tenni.strategies import get_strategy_class
    from tenni.strategies.setfit import learning_rate

    # few steps move further each; many steps keep the small rate; the bounds hold either way
    assert learning_rate(16) == pytest.approx(8e-5) and learning_rate(5000) == pytest.approx(2e-5)
    assert learning_rate(32) == pytest.approx(8e-5) and learning_rate(64) == pytest.approx(2e-5)
    assert 2e-5 < learning_rate(48) < 8e-5 and learning_rate(48, 1e-3) == pytest.approx(1e-3)
    est = get_strategy_class("setfit")(backbone=str(tiny_backbone), seed=0, config={
        "examples_seen": 2, "max_length": 24}).fit(*train_data)
    assert est.training_["learning_rate"] == pytest.approx(learning_rate(est.training_["steps"]))


def test_setfit_pairs_loss_is_still_there(tiny_backbone, train_data):
    from tenni.strategies import get_strategy_class

    est = get_strategy_class("setfit")(backbone=str(tiny_backbone), seed=0, config={
        "loss": "pairs", "num_iterations": 2, "max_pairs": 64, "max_length": 24}).fit(*train_data)
    assert est.training_["loss"] == "pairs" and est.training_["pairs"] == 64
    assert est.length_["max_length"] == 24 and est.length_["source"] == "max_length option"
    with pytest.raises(ConfigError, match="loss"):
        get_strategy_class("setfit")(backbone=str(tiny_backbone), config={"loss": "triplet"}).fit(*train_data)


def test_auto_prior_grows_with_text_length():
    from tenni.strategies.auto import estimate_seconds

    for name in ("setfit", "lora", "finetune"):
        short = estimate_seconds(name, 40, 4, characters=40 * 150)
        long = estimate_seconds(name, 40, 4, characters=40 * 1500)
        longer = estimate_seconds(name, 40, 4, characters=40 * 15000)  # past the cap: cut, so no dearer
        assert long > 2 * short, name
        assert longer == pytest.approx(long), name
    assert estimate_seconds("probe", 40, 4, characters=40 * 1500) == estimate_seconds("probe", 40, 4)
