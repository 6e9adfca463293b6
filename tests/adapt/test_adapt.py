"""Continued pretraining: changes the encoder, round-trips as a backbone, resumes, refuses an empty corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tenni.adapt import adapt
from tenni.adapt import continued as continued_module
from tenni.backbones import TextBackbone
from tenni.errors import ConfigError, DataError

CORPUS = [f"Invoice {i} for the quarterly maintenance of pump station {i % 7} was approved by the plant manager."
          for i in range(40)] + [f"Sensor {i} reported vibration above threshold on conveyor line {i % 5}."
                                 for i in range(40)]
FAST = {"batch_size": 8, "max_steps": 6, "learning_rate": 5e-4, "max_length": 24, "checkpoint_every": 2}


def test_simcse_changes_embeddings_and_round_trips(tiny_backbone, tmp_path):
    out = adapt(CORPUS, tmp_path / "adapted", backbone=str(tiny_backbone), config=dict(FAST, method="simcse"))
    lineage = json.loads((out / "tenni-backbone.json").read_text())
    assert lineage["base"] == str(tiny_backbone) and lineage["method"] == "simcse"
    assert lineage["steps"] == 6 and lineage["corpus_texts"] == len(CORPUS)
    assert lineage["base_fingerprint"].startswith("sha256:") and lineage["corpus_sha256"].startswith("sha256:")
    before = TextBackbone("base", tiny_backbone).encode(CORPUS[:4])
    after = TextBackbone("adapted", out).encode(CORPUS[:4])
    assert after.shape == before.shape and np.abs(after - before).max() > 1e-3
    assert not (tmp_path / "adapted.partial").exists(), "checkpoints are removed after success"


def test_mlm_adds_a_head_when_the_model_has_none(tiny_backbone, tmp_path):
    out = adapt(CORPUS, tmp_path / "mlm", backbone=str(tiny_backbone), config=dict(FAST, method="mlm"))
    assert json.loads((out / "tenni-backbone.json").read_text())["method"] == "mlm"
    assert TextBackbone("m", out).encode(["pump station"]).shape == (1, 32)


def test_tsdae_learns_to_rebuild_texts_and_trains_the_saved_encoder(tiny_backbone, tmp_path):
    config = dict(FAST, method="tsdae", max_steps=24, epochs=5, learning_rate=1e-2, checkpoint_every=100)
    out = adapt(CORPUS, tmp_path / "tsdae", backbone=str(tiny_backbone), config=config)
    lineage = json.loads((out / "tenni-backbone.json").read_text())
    assert lineage["method"] == "tsdae" and lineage["steps"] == 24
    assert lineage["last_loss"] < lineage["first_loss"] - 1.0, "reconstruction loss falls on a repetitive corpus"
    before = TextBackbone("base", tiny_backbone).encode(CORPUS[:4])
    after = TextBackbone("tsdae", out).encode(CORPUS[:4])
    assert np.abs(after - before).max() > 1e-3, "the decoder shares the encoder's weights, so the encoder changed"
    assert not any("crossattention" in p.name for p in out.iterdir())


def test_tsdae_resumes_from_its_checkpoint(tiny_backbone, tmp_path, monkeypatch):
    real = continued_module._tsdae_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(continued_module, "_tsdae_loss", flaky)
    config = dict(FAST, method="tsdae")
    with pytest.raises(KeyboardInterrupt):
        adapt(CORPUS, tmp_path / "t", backbone=str(tiny_backbone), config=config)
    calls["n"] = -100  # no more interruptions
    adapt(CORPUS, tmp_path / "t", backbone=str(tiny_backbone), config=config, resume=True)
    assert calls["n"] == -98 and json.loads((tmp_path / "t" / "tenni-backbone.json").read_text())["steps"] == 6


def test_interrupted_run_leaves_no_output_and_resumes(tiny_backbone, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = continued_module._info_nce

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the checkpoint at step 4
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(continued_module, "_info_nce", flaky)
    target = tmp_path / "adapted"
    with pytest.raises(KeyboardInterrupt):
        adapt(CORPUS, target, backbone=str(tiny_backbone), config=FAST)
    assert not target.exists(), "an interrupted run must not leave a half-written backbone"
    assert (tmp_path / "adapted.partial" / "checkpoint" / "state.json").exists()
    monkeypatch.setattr(continued_module, "_info_nce", real)
    calls["n"] = 0
    monkeypatch.setattr(continued_module, "_info_nce", lambda *a, **k: (calls.__setitem__("n", calls["n"] + 1),
                                                                          real(*a, **k))[1])
    adapt(CORPUS, target, backbone=str(tiny_backbone), config=FAST, resume=True)
    lineage = json.loads((target / "tenni-backbone.json").read_text())
    assert lineage["steps"] == 6 and calls["n"] == 2, "resumed at step 4: only the last two steps ran"


@pytest.mark.parametrize("method", ["mlm", "tsdae"])  # masks and deletions are drawn from numpy's generator
def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_run(tiny_backbone, tmp_path, monkeypatch, method):
    from safetensors.numpy import load_file

    config = dict(FAST, method=method, max_steps=5)
    whole = adapt(CORPUS, tmp_path / "whole", backbone=str(tiny_backbone), config=config)
    name = {"mlm": "_mlm_loss", "tsdae": "_tsdae_loss"}[method]
    real, calls = getattr(continued_module, name), {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # after the checkpoint at step 2, two steps into the next stretch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(continued_module, name, flaky)
    with pytest.raises(KeyboardInterrupt):
        adapt(CORPUS, tmp_path / "split", backbone=str(tiny_backbone), config=config)
    monkeypatch.setattr(continued_module, name, real)
    split = adapt(CORPUS, tmp_path / "split", backbone=str(tiny_backbone), config=config, resume=True)
    assert json.loads((split / "tenni-backbone.json").read_text())["steps"] == 5
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert a.keys() == b.keys()
    moved = load_file(str(tiny_backbone / "model.safetensors"))
    assert any(not np.allclose(a[k], moved[k]) for k in a if k in moved)  # training moved the weights
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_empty_corpus_is_refused(tmp_path, tiny_backbone):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(DataError, match="empty"):
        adapt(empty, tmp_path / "out", backbone=str(tiny_backbone), config=FAST)
    with pytest.raises(DataError, match="empty"):
        adapt(["  "], tmp_path / "out", backbone=str(tiny_backbone), config=FAST)


def test_assess_puts_the_adapted_backbone_beside_its_base(tiny_backbone, tmp_path, train_data):
    from tenni.assess import assess

    out = adapt(CORPUS, tmp_path / "adapted", backbone=str(tiny_backbone), config=FAST)
    result = assess(train_data, backbones=[str(tiny_backbone), str(out)])
    adapted = next(r for r in result.reports if r.backbone == str(out))
    assert adapted.signals["adapted_from"] == str(tiny_backbone)
    assert "gain_over_base" in adapted.signals
    assert any("base" in reason for reason in adapted.reasons)
    alone = assess(train_data, backbones=[str(out)])  # the base is added beside it
    assert sorted(r.backbone for r in alone.reports if r.backbone != "scratch (TF-IDF)") == sorted(
        [str(out), str(tiny_backbone)])
    assert "gain_over_base" in next(r for r in alone.reports if r.backbone == str(out)).signals


def test_models_lists_adapted_backbones(tiny_backbone, tmp_path, capsys, monkeypatch):
    import sys

    from tenni.cli import main

    adapt(CORPUS, tmp_path / "a1", backbone=str(tiny_backbone), config=FAST)
    monkeypatch.setattr(sys, "argv", ["tenni", "models", "--dir", str(tmp_path), "--json"])
    main()
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == str(tmp_path / "a1") and "adapted from" in r["source"] for r in rows)


def test_adapt_refuses_to_replace_a_folder_it_did_not_write(tiny_backbone, tmp_path, monkeypatch):
    from tenni.errors import TenniError

    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "thesis.tex").write_text("precious")
    # refused before any training, not after it
    monkeypatch.setattr(continued_module, "_build", lambda *a, **k: pytest.fail("built the model before refusing"))
    with pytest.raises(TenniError, match="refusing"):
        adapt(CORPUS, precious, backbone=str(tiny_backbone), config=dict(FAST, max_steps=1))
    assert (precious / "thesis.tex").read_text() == "precious"


def test_tsdae_softmax_over_the_corpus_vocabulary_is_the_full_head_restricted():
    import torch
    from transformers import BertConfig, BertLMHeadModel

    from tenni.adapt.continued import restricted_logits

    torch.manual_seed(0)
    model = BertLMHeadModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, is_decoder=True))
    hidden = torch.randn(7, 16)
    ids = torch.tensor([0, 3, 7, 42])
    with torch.no_grad():
        np.testing.assert_allclose(restricted_logits(model.cls, hidden, ids).numpy(),
                                   model.cls(hidden)[:, ids].numpy(), rtol=1e-5, atol=1e-6)
    assert restricted_logits(torch.nn.Linear(16, 50), hidden, ids) is None  # unknown layout: the caller falls back


def test_tsdae_loss_in_length_groups_equals_one_padded_batch(tiny_backbone):
    """TSDAE's encoder and decoder run in groups of similar length: the loss is the one a single batch padded to its
    longest text gives (one group), with the corpus-vocabulary softmax and with the full head."""
    import torch

    from tenni.adapt.continued import AdaptConfig, _build, _tsdae_loss, corpus_vocabulary
    from tenni.backbones import get_backbone

    cfg = AdaptConfig(method="tsdae", max_length=48)
    tokenizer, model, encoder = _build(get_backbone(str(tiny_backbone)), cfg)
    model.eval()
    with torch.no_grad():  # a random decoder barely reads the pooled vector: sharpen it so a wrong row would show
        for name, weight in model["decoder"].named_parameters():
            if "crossattention" in name and name.endswith("weight") and "LayerNorm" not in name:
                weight.mul_(30)
        model["decoder"].get_input_embeddings().weight.mul_(50)
    batch = [text * (1 + i % 4) for i, text in enumerate(CORPUS[::4])]
    assert len({len(r) for r in tokenizer(batch, truncation=True, max_length=48)["input_ids"]}) > 2
    vocab = corpus_vocabulary(tokenizer, batch, 48)
    for v in (vocab, None):
        with torch.no_grad():
            one, grouped = (_tsdae_loss(encoder, model["decoder"], tokenizer, batch, cfg, np.random.default_rng(0), v,
                                        group=g) for g in (len(batch), 3))
        assert torch.allclose(one, grouped, atol=1e-4)


def test_corpus_vocabulary_maps_every_token_of_the_corpus(tiny_backbone):
    import torch
    from transformers import AutoTokenizer

    from tenni.adapt.continued import corpus_vocabulary
    from tenni.backbones import get_backbone

    tokenizer = AutoTokenizer.from_pretrained(str(get_backbone(str(tiny_backbone)).transformer_dir()))
    ids, position = corpus_vocabulary(tokenizer, CORPUS, 16)
    used = {t for row in tokenizer(CORPUS, truncation=True, max_length=16)["input_ids"] for t in row}
    assert used <= set(ids.tolist()) and len(ids) < len(tokenizer)
    assert torch.equal(position[ids], torch.arange(len(ids)))
    unused = [t for t in range(len(tokenizer)) if t not in set(ids.tolist())]
    assert unused and bool((position[unused] == -100).all())


def test_span_views_are_windows_of_long_documents_and_crops_of_short_ones(tiny_backbone):
    from transformers import AutoTokenizer

    from tenni.adapt.continued import AdaptConfig, span_views, special_frame
    from tenni.backbones import get_backbone

    tokenizer = AutoTokenizer.from_pretrained(str(get_backbone(str(tiny_backbone)).transformer_dir()))
    prefix, suffix = special_frame(tokenizer)
    assert prefix == [tokenizer.cls_token_id] and suffix == [tokenizer.sep_token_id]
    long_doc, short = list(range(1000, 1200)), [7, 8, 9, 10]
    cfg = AdaptConfig(method="spans", max_length=16, crop_min=0.5)
    firsts, seconds = [], []
    for seed in range(20):
        views = span_views(tokenizer, [long_doc, short], cfg, np.random.default_rng(seed))
        assert len(views) == 4 and all(v[:1] == prefix and v[-1:] == suffix for v in views)
        for view in (views[0], views[2]):  # the long document: 14-token windows, contiguous
            body = view[1:-1]
            assert len(body) == 14 and body == list(range(body[0], body[0] + 14))
        for view in (views[1], views[3]):  # the short text: a contiguous crop of at least half of it
            body = view[1:-1]
            assert 2 <= len(body) <= 4 and body == short[short.index(body[0]):short.index(body[0]) + len(body)]
        firsts.append(views[0][1])
        seconds.append(views[2][1])
    assert firsts != seconds, "the two windows of a document are placed independently"


def test_spans_result_is_merged_with_the_base(tiny_backbone, tmp_path):
    """merge=1 keeps the trained weights, 0 gives the base back exactly, 0.5 lands in between."""
    documents = [" ".join(CORPUS[i:i + 6]) for i in range(0, len(CORPUS), 6)]
    config = dict(FAST, max_length=16, batch_size=4)  # the default method: spans
    outs = {share: adapt(documents, tmp_path / f"m{share}", backbone=str(tiny_backbone),
                         config=dict(config, merge=share)) for share in (1.0, 0.5, 0.0)}
    assert json.loads((outs[1.0] / "tenni-backbone.json").read_text())["method"] == "spans"
    before = TextBackbone("base", tiny_backbone).encode(CORPUS[:8])
    moved = {share: np.abs(TextBackbone(str(share), out).encode(CORPUS[:8]) - before).mean()
             for share, out in outs.items()}
    assert moved[0.0] < 1e-6 < moved[0.5] < moved[1.0]
    for bad in (1.5, "half"):
        with pytest.raises(ConfigError, match="between 0 and 1"):
            adapt(documents, tmp_path / "bad", backbone=str(tiny_backbone), config=dict(config, merge=bad))


def test_auto_merge_keeps_the_share_of_the_spans_task_the_base_fails_on(tiny_backbone, tmp_path):
    """merge=auto measures the base on the spans task before training and keeps 1 - accuracy of the adapted
    weights (at least a quarter); the result equals the fixed-share run with that share, so training is unchanged."""
    from tenni.adapt.continued import MERGE_FLOOR, auto_share

    documents = [" ".join(CORPUS[i:i + 6]) for i in range(0, len(CORPUS), 6)]
    config = dict(FAST, max_length=16, batch_size=4)
    auto = adapt(documents, tmp_path / "auto", backbone=str(tiny_backbone), config=config)  # auto: the default
    lineage = json.loads((auto / "tenni-backbone.json").read_text())
    accuracy = lineage["base_pretext"]["accuracy"]
    assert lineage["config"]["merge"] == "auto" and 0 <= accuracy <= 1
    assert lineage["base_pretext"]["documents"] >= len(documents) - 2  # a small remainder batch may be left out
    assert lineage["merge_share"] == auto_share(accuracy) and MERGE_FLOOR <= lineage["merge_share"] <= 1
    fixed = adapt(documents, tmp_path / "fixed", backbone=str(tiny_backbone),
                  config=dict(config, merge=lineage["merge_share"]))
    assert json.loads((fixed / "tenni-backbone.json").read_text())["base_pretext"] == lineage["base_pretext"]
    np.testing.assert_allclose(TextBackbone("a", auto).encode(CORPUS[:8]), TextBackbone("f", fixed).encode(CORPUS[:8]),
                               atol=1e-6)


def test_auto_share_follows_how_well_the_base_knows_the_corpus():
    from tenni.adapt.continued import auto_share, describe_auto_share, parse_merge

    assert auto_share(1.0) == auto_share(0.9) == 0.25  # a known domain: a light touch
    assert auto_share(0.43) == 0.57 and auto_share(0.0) == 1.0  # the share the base fails on
    assert auto_share(None) == 0.5  # too small a corpus to measure
    assert "light touch" in describe_auto_share(0.98, 0.25) and "does not know" in describe_auto_share(0.4, 0.6)
    assert parse_merge("AUTO") == "auto" and parse_merge("0.5") == 0.5 and parse_merge(1) == 1.0


def test_base_pretext_tells_a_known_text_from_noise(tiny_backbone):
    """The spans-task accuracy is high where passages of a document share words and low on random token soup:
    the measure behind merge=auto responds to how recognisable documents are to the encoder."""
    from tenni.adapt.continued import AdaptConfig, base_pretext
    from tenni.backbones import get_backbone
    from tenni.strategies._torch import load_encoder

    tokenizer, encoder, _ = load_encoder(get_backbone(str(tiny_backbone)))
    cfg = AdaptConfig(batch_size=8, max_length=24)
    rng = np.random.default_rng(0)
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 3][:64]
    distinct = [" ".join(rng.choice(words[2 * i:2 * i + 2], 60)) for i in range(32)]  # each document its own words
    soup = [" ".join(rng.choice(words, 60)) for _ in range(32)]  # every document the same mix of all of them
    known, noise = base_pretext(encoder, tokenizer, distinct, cfg), base_pretext(encoder, tokenizer, soup, cfg)
    assert known["documents"] == noise["documents"] == 32
    assert known["accuracy"] > noise["accuracy"] + 0.2


def test_pair_logits_in_length_groups_equal_one_padded_batch(tiny_backbone):
    """The contrastive objectives encode their views in groups of similar length: the similarity matrix is the one
    a single batch padded to the longest view gives, rows and columns in the caller's order."""
    import torch

    from tenni.adapt.continued import AdaptConfig, _pair_logits, span_views
    from tenni.backbones import get_backbone
    from tenni.strategies._torch import load_encoder

    tokenizer, encoder, _ = load_encoder(get_backbone(str(tiny_backbone)))
    encoder.eval()
    documents = tokenizer([text * (1 + i % 3) for i, text in enumerate(CORPUS[::5])], add_special_tokens=False,
                          truncation=True, max_length=64)["input_ids"]
    rows = span_views(tokenizer, documents, AdaptConfig(max_length=48, crop_min=0.2), np.random.default_rng(0))
    assert len({len(r) for r in rows}) > 4, "views of many lengths, so groups differ from the padded batch"
    n = len(documents)
    with torch.no_grad():
        padded = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        emb = torch.nn.functional.normalize(encoder(padded["input_ids"], padded["attention_mask"]), dim=-1)
        whole = emb[:n] @ emb[n:].T / 0.05
        grouped = _pair_logits(encoder, tokenizer, rows, n, 0.05)
    assert torch.allclose(grouped, whole, atol=1e-4)


def test_mlm_loss_in_length_groups_equals_the_heads_loss_on_one_padded_batch(tiny_backbone):
    """MLM runs its rows in groups of similar length and projects only the masked positions to the vocabulary: the
    loss is the masked-LM model's own loss on the whole batch padded to its longest row. Every masked token is a
    real one, never a special token, and the masked share is near the configured rate."""
    import torch

    from tenni.adapt.continued import AdaptConfig, _build, mlm_grouped_loss, mlm_masks
    from tenni.backbones import get_backbone

    tokenizer, model, _ = _build(get_backbone(str(tiny_backbone)), AdaptConfig(method="mlm"))
    model.eval()
    batch = [text * (1 + i % 4) for i, text in enumerate(CORPUS[::4])]
    rows, labels = mlm_masks(tokenizer, batch, 64, 0.15, np.random.default_rng(0))
    assert len({len(r) for r in rows}) > 2, "rows of several lengths, so groups differ from the padded batch"
    special = set(tokenizer.all_special_ids)
    masked = [(r[i], lab[i]) for r, lab in zip(rows, labels) for i in range(len(r)) if lab[i] != -100]
    assert all(t == tokenizer.mask_token_id and lab not in special for t, lab in masked)
    assert 0.08 < len(masked) / sum(len(r) - 2 for r in rows) < 0.25
    padded = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    width = padded["input_ids"].shape[1]
    target = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    with torch.no_grad():
        whole = model(**padded, labels=target).loss
        grouped = mlm_grouped_loss(model, tokenizer, rows, labels, group=3)
    assert torch.allclose(grouped, whole, atol=1e-4)
    _, none_drawn = mlm_masks(tokenizer, batch[:2], 64, 0.0, np.random.default_rng(0))
    assert sum(lab != -100 for row in none_drawn for lab in row) == 1


def test_cli_adapt_writes_a_backbone_says_how_to_check_it_and_refuses_bad_input(tiny_backbone, tmp_path,
                                                                              capsys, monkeypatch):
    import sys

    from tenni.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["tenni", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return code, capsys.readouterr()

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    out = tmp_path / "adapted"
    code, captured = run("adapt", corpus, "-o", out, "--backbone", tiny_backbone, "--max-steps", 2,
                         "--set", "batch_size=8", "--set", "max_length=16")
    assert code == 0, captured.err
    lineage = json.loads((out / "tenni-backbone.json").read_text())
    assert lineage["config"]["merge"] == "auto" and 0.25 <= lineage["merge_share"] <= 1
    assert "of passage pairs from this corpus" in " ".join(captured.err.split() + captured.out.split())
    assert f"tenni assess YOUR_LABELED_DATA --backbones {tiny_backbone},{out}" in " ".join(captured.out.split())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    code, captured = run("adapt", empty, "-o", tmp_path / "never", "--backbone", tiny_backbone)
    assert code == 2 and "empty" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "never").exists()
    code, captured = run("adapt", corpus, "-o", tmp_path / "never", "--backbone", tiny_backbone, "--merge", 2)
    assert code == 2 and "between 0 and 1" in captured.err
    code, captured = run("adapt", corpus, "-o", tmp_path / "half", "--backbone", tiny_backbone, "--max-steps", 1,
                         "--merge", "0.5", "--set", "batch_size=8", "--set", "max_length=16")
    assert code == 0 and json.loads((tmp_path / "half" / "tenni-backbone.json").read_text())["merge_share"] == 0.5
