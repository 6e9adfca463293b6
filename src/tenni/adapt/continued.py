"""Continued pretraining of a sentence encoder on unlabeled in-domain text (DAPT/TAPT, Gururangan et al. 2020).

Methods: ``spans`` (default; two random passages of one document are positives: DeCLUTR, Contriever cropping),
``simcse`` (dropout views of one text), ``tsdae`` (rebuild a text from the pooled vector of its damaged copy) and
``mlm`` (masked-language modelling). The result is merged with its base (WiSE-FT), keeping a share of the adapted
weights that follows how far the corpus is from the base (``merge="auto"``), so a tuned sentence encoder does not
lose what it knew. Checkpoints, ``resume`` and an atomic output make long runs safe; the lineage goes to
``tenni-backbone.json``. Why these choices, with the measurements: docs/design/merge-auto.md.

Launched on several processes (torchrun, ``tenni adapt --processes N``), every rank draws the same global batch
and its random views or masks (same seed), encodes its slice, and the gradients are summed before each step (see
``strategies/_parallel``): the contrastive methods (spans, simcse) gather the embeddings of all ranks, so the
negatives span the global batch; mlm and tsdae weigh each rank's tokens as their share of the global batch's. Only
the main process writes checkpoints and the output folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .._logging import info, progress
from .._paths import AtomicDirectory, atomic_write_json
from ..config import NON_NEGATIVE, POSITIVE, SHARE, option
from ..errors import ConfigError, DataError

LINEAGE_FILE = "tenni-backbone.json"
METHODS = ("simcse", "spans", "tsdae", "mlm")


@dataclass
class AdaptConfig:
    method: str = option("spans", "spans, simcse, tsdae or mlm")
    max_steps: int = option(1000, "optimizer steps at most", **POSITIVE)
    epochs: int = option(1, "passes over the corpus at most", **POSITIVE)
    budget: float | None = option(None, "seconds at most (stops cleanly, saves)", **POSITIVE)
    batch_size: int = option(32, "texts per step (SimCSE negatives come from the batch)", **POSITIVE)
    learning_rate: float = option(3e-5, "AdamW learning rate", **POSITIVE)
    max_length: int = option(64, "tokens per text", **POSITIVE)
    temperature: float = option(0.05, "SimCSE softmax temperature", **POSITIVE)
    document_tokens: int = option(512, "spans: tokens of each document sampled from", **POSITIVE)
    crop_min: float = option(0.5, "spans: shortest crop of a short text, as a share", **SHARE)
    merge: float | str = option("auto", "share of the adapted weights in the result, the rest the base's (WiSE-FT); "
                                        "auto: from how well the base knows the corpus; 1: as trained", **SHARE)
    mask_probability: float = option(0.15, "MLM masking rate", **SHARE)
    deletion_ratio: float = option(0.6, "TSDAE: share of tokens deleted from the input", **SHARE)
    checkpoint_every: int = option(100, "steps between resumable checkpoints", **POSITIVE)
    seed: int = option(0, "shuffling, dropout and masking seed", **NON_NEGATIVE)


def read_corpus(source, *, text_col: str | None = None, encoding: str = "auto") -> list[str]:
    """Unlabeled texts: a .txt file (one document per line), a CSV/JSONL/Parquet column, or a folder of .txt."""
    from ..data import as_dataset
    from ..data.readers import read_text_file

    if isinstance(source, (list, tuple)) and all(isinstance(t, str) for t in source):
        texts = [t.strip() for t in source if t and t.strip()]
        path = "the corpus"
    else:
        path = Path(source)
        if path.is_dir() and not any(p.is_dir() for p in path.iterdir()):
            texts = []
            for f in sorted(path.rglob("*.txt")):  # any encoding the readers detect (UTF-8, UTF-16, CP932...)
                if f.stat().st_size and (body := read_text_file(f, encoding, allow_blank=True)):
                    texts.append(body)
        else:
            texts = list(as_dataset(path, text_col=text_col, labeled=False, encoding=encoding).inputs)
    if not texts:
        raise DataError("the corpus is empty: no non-blank texts", path=str(path),
                        hint="give a .txt file with one document per line, a CSV column, or a folder of .txt")
    return texts


def corpus_hash(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8"))
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def adapt(corpus, output: str | Path, *, backbone: str = "text/minilm", config: AdaptConfig | dict | None = None,
          resume: bool = False, from_labeled=None, text_col: str | None = None, encoding: str = "auto") -> Path:
    """Continue pretraining ``backbone`` on ``corpus`` (or the texts of ``from_labeled``) into ``output``."""
    import torch

    from ..backbones import get_backbone
    from ..config import make_config

    cfg = make_config(AdaptConfig, config)
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown method '{cfg.method}'", hint=f"choose one of: {', '.join(METHODS)}")
    merge = parse_merge(cfg.merge)
    cfg = replace(cfg, merge=merge)
    texts = read_corpus(from_labeled if from_labeled is not None else corpus, text_col=text_col, encoding=encoding)
    base = get_backbone(backbone)
    if not base.trainable or not hasattr(base, "transformer_dir"):
        raise ConfigError(f"'{base.name}' is frozen and cannot be adapted", hint="adapt a PyTorch backbone")
    from ..strategies import _parallel

    par = _parallel.current()  # None: one process on the CPU, the plain loop
    distributed = par is not None and par.distributed
    main = par is None or par.rank == 0
    if par is not None and par.device != "cpu":
        raise ConfigError("tenni adapt trains on the CPU in this version", hint="unset TENNI_DEVICE (or set it to cpu)")
    if distributed and cfg.budget is not None:
        raise ConfigError("a budget stops training on the clock, which would stop the ranks at different steps",
                          hint="drop --budget with --processes (use --max-steps)")
    output = Path(output)
    AtomicDirectory(output, marker=LINEAGE_FILE).check()  # refuse a foreign folder before training, not after
    partial = output.parent / f"{output.name}.partial"
    lineage = {"base": base.name, "base_fingerprint": base.fingerprint, "method": cfg.method,
               "corpus_sha256": corpus_hash(texts), "corpus_texts": len(texts),
               "corpus_characters": int(sum(len(t) for t in texts)),
               "task_adaptive": from_labeled is not None, "config": asdict(cfg)}
    if main and not resume and partial.exists():
        shutil.rmtree(partial)

    torch.manual_seed(cfg.seed)
    tokenizer, model, encoder = _build(base, cfg)
    lineage["base_pretext"] = base_pretext(encoder, tokenizer, texts, cfg)  # the base as built: before any resume
    share = auto_share(lineage["base_pretext"]["accuracy"]) if merge == "auto" else merge
    lineage["merge_share"] = share
    if distributed:
        par.broadcast_from_main(model)  # newly initialised heads and cross-attention: the main process's
        lineage["world_size"] = par.world
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _parallel.adamw(params, lr=cfg.learning_rate, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    if total < 1:
        raise ConfigError("nothing to train: max_steps and epochs give zero steps")
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total), total)
    from ..strategies._resume import load_state, save_state, state_key

    volatile = ("budget", "checkpoint_every", "merge")  # may change between a run and its resumption
    key = state_key(model, [{k: lineage[k] for k in ("base_fingerprint", "method", "corpus_sha256")},
                            {k: v for k, v in lineage["config"].items() if k not in volatile}])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    checkpoint = partial / "checkpoint"
    step, losses, elapsed_before, saved_rng = 0, [], 0.0, None
    if resume:
        loaded = load_state(checkpoint, key, model, optimizer, scheduler)
        if loaded is None:
            info("no matching checkpoint to resume from: starting from the beginning")
        else:
            meta = loaded[0]
            step, losses, elapsed_before, saved_rng = meta["step"], meta["losses"], meta["elapsed"], meta["numpy_rng"]
            info(f"resuming at step {step} of {total}")
    vocab = corpus_vocabulary(tokenizer, texts, cfg.max_length) if cfg.method == "tsdae" else None
    documents = None
    if cfg.method == "spans":
        documents = tokenizer(texts, add_special_tokens=False, truncation=True,
                              max_length=cfg.document_tokens)["input_ids"]
    rng = np.random.default_rng(cfg.seed)
    order = np.concatenate([rng.permutation(len(texts)) for _ in range(cfg.epochs)])
    if saved_rng is not None:  # the masks and deletions the uninterrupted run would draw from here on
        rng.bit_generator.state = saved_rng
    start = time.perf_counter()
    stopped = "steps"
    model.train()
    with progress(f"adapting ({cfg.method})", total) as bar:
        bar.advance(step)
        while step < total:
            if cfg.budget is not None and elapsed_before + time.perf_counter() - start > cfg.budget:
                stopped = "budget"
                break
            idx = order[(step * cfg.batch_size) % len(order):][: cfg.batch_size]
            batch = [texts[i] for i in idx]
            with par.autocast() if par is not None else contextlib.nullcontext():
                if cfg.method == "simcse":
                    loss = _simcse_loss(encoder, tokenizer, batch, cfg, par=par)
                elif cfg.method == "spans":
                    loss = _spans_loss(encoder, tokenizer, [documents[i] for i in idx], cfg, rng, par=par)
                elif cfg.method == "tsdae":
                    loss = _tsdae_loss(encoder, model["decoder"], tokenizer, batch, cfg, rng, vocab, par=par)
                else:
                    loss = _mlm_loss(model, tokenizer, batch, cfg, rng, par=par)
            if distributed:
                par.bind_gradients(params)
            if loss.requires_grad:  # False only on a rank left without rows (or masked tokens) this step
                loss.backward()
            shown = float(loss.detach())
            if distributed:
                par.sum_gradients(params)
                if cfg.method in ("tsdae", "mlm"):  # each rank holds its share of the batch's loss
                    shown = par.sum_scalar(shown)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(shown)
            step += 1
            bar.advance(1)
            if step % cfg.checkpoint_every == 0 and step < total:  # the main process writes, the ranks wait
                save_state(checkpoint, key, model, trainable, optimizer, scheduler, par,
                           meta={"step": step, "losses": losses, "numpy_rng": rng.bit_generator.state,
                                 "elapsed": elapsed_before + time.perf_counter() - start})
    lineage.update(steps=step, planned_steps=total, stopped_by=stopped,
                   seconds=round(elapsed_before + time.perf_counter() - start, 1),
                   first_loss=float(np.mean(losses[:10])) if losses else None,
                   last_loss=float(np.mean(losses[-10:])) if losses else None,
                   created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if main:
        if merge == "auto":
            info(describe_auto_share(lineage["base_pretext"]["accuracy"], share))
        if share < 1:
            from ..backbones.text_torch import load_encoder

            merge_with_base(encoder.model, load_encoder(base)[1].model, share)
        _write_backbone(output, base, encoder.model, tokenizer, lineage)
        shutil.rmtree(partial, ignore_errors=True)
    if distributed:
        par.barrier()  # every rank returns once the folder is there
    return output


def _build(base, cfg: AdaptConfig):
    from ..backbones.text_torch import load_encoder

    tokenizer, encoder, _ = load_encoder(base)
    if cfg.method in ("simcse", "spans"):
        return tokenizer, encoder, encoder
    if cfg.method == "tsdae":
        encoder.normalise = False  # the decoder reads the raw pooled vector (the saved folder keeps its pooling)
        return tokenizer, _tsdae_model(base, encoder), encoder
    from transformers import AutoModelForMaskedLM

    from .._context import quiet_transformers

    with quiet_transformers():  # "newly initialized head" is expected here, and said below
        mlm = AutoModelForMaskedLM.from_pretrained(str(base.transformer_dir()))
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"'{base.name}' has no mask token, so it cannot do MLM", hint="use --method simcse")
    base_prefix = mlm.base_model_prefix
    encoder.model = getattr(mlm, base_prefix)  # share weights: what MLM trains is what gets saved
    return tokenizer, mlm, encoder


def _simcse_loss(encoder, tokenizer, batch, cfg, par=None):
    rows = tokenizer(batch, truncation=True, max_length=cfg.max_length)["input_ids"]
    return _info_nce(encoder, tokenizer, rows + rows, len(batch), cfg.temperature, par=par)


def _info_nce(encoder, tokenizer, rows, n, temperature, par=None):
    """Rows i and n + i of ``rows`` are positives; every other second view in the batch is a negative."""
    import torch

    logits = _pair_logits(encoder, tokenizer, rows, n, temperature, par=par)
    return torch.nn.functional.cross_entropy(logits, torch.arange(n))


def _pair_logits(encoder, tokenizer, rows, n, temperature, par=None):
    """Cosine similarities / temperature of every first view (rows) against every second view (columns).

    The views (token ids) are encoded in groups of similar length, so a batch of short texts is not padded to its
    longest one: the same embeddings, less padding."""
    import torch

    emb = torch.nn.functional.normalize(_encode_rows(encoder, tokenizer, rows, par=par).float(), dim=-1)
    return emb[:n] @ emb[n:].T / temperature


def _encode_rows(encoder, tokenizer, rows, par=None):
    """Pooled embeddings of token-id ``rows``, encoded in groups of similar length. On several processes each rank
    encodes its slice of the rows and those of all ranks are gathered (``Parallel.gather_rows``): every rank gets
    all the embeddings, with the autograd graph of its own."""
    from functools import partial

    import torch

    from ..backbones.text_torch import forward_in_groups, pad_rows

    if par is None or not par.distributed:
        return forward_in_groups(encoder, rows, partial(pad_rows, tokenizer))
    mine = par.shard(np.arange(len(rows)))
    if len(mine):
        local = forward_in_groups(encoder, [rows[i] for i in mine], partial(pad_rows, tokenizer)).float()
    else:  # fewer rows than ranks: this one only joins the gather
        local = torch.zeros((0, encoder.model.config.hidden_size))
    return par.gather_rows(local, par.split_sizes(len(rows)))


def _token_mean(total, count: int, par=None):
    """The mean loss over the tokens of the global batch: ``total`` (a sum over ``count`` tokens) divided by the
    tokens of all ranks, so that the ranks' parts add up to the mean one process computes on the whole batch."""
    import torch

    if par is not None and par.distributed:
        count = par.sum_scalar(count)
    if not torch.is_tensor(total):  # no tokens on this rank: a zero that joins the sums
        total = torch.zeros(())
    return total / max(count, 1)


MERGE_FLOOR = 0.25  # the share kept where the base already knows the corpus


def parse_merge(value) -> float | str:
    """``"auto"`` or a share between 0 and 1 (numbers may arrive as strings from the CLI)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = float("nan")
    if not 0 <= share <= 1:
        raise ConfigError(f"merge must be 'auto' or a number between 0 and 1, got {value}",
                          hint="auto (the default) sets it from how well the base knows the corpus; 1 keeps the "
                               "weights as trained, 0.5 averages with the base")
    return share


def base_pretext(encoder, tokenizer, texts: list[str], cfg, sample: int = 256) -> dict:
    """How well the base already does the spans task on this corpus, before any training: for up to ``sample``
    documents, two random spans each, the share of first spans whose nearest second span (cosine, among a batch of
    ``batch_size`` documents) is their own. No labels; a base that knows this kind of text matches nearly all,
    one that does not fails often (docs/design/merge-auto.md). Runs in eval mode with its own random stream, so
    the training that follows is unchanged."""
    import torch

    rng = np.random.default_rng(cfg.seed + 7919)
    chosen = rng.permutation(len(texts))[:sample]
    documents = tokenizer([texts[i] for i in chosen], add_special_tokens=False, truncation=True,
                          max_length=cfg.document_tokens)["input_ids"]
    batch = max(2, cfg.batch_size)
    hits = total = 0
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        for begin in range(0, len(documents), batch):
            chunk = documents[begin:begin + batch]
            if len(chunk) < 2 or (begin and len(chunk) < batch // 2):  # a small remainder is an easier test
                continue
            logits = _pair_logits(encoder, tokenizer, span_views(tokenizer, chunk, cfg, rng), len(chunk),
                                  cfg.temperature)
            hits += int((logits.argmax(dim=1) == torch.arange(len(chunk))).sum())
            total += len(chunk)
    encoder.train(was_training)
    return {"accuracy": round(hits / total, 4) if total else None, "documents": total, "batch": batch}


def auto_share(accuracy: float | None) -> float:
    """The share of adapted weights to keep: the share of the spans task the base fails on, at least
    ``MERGE_FLOOR`` (0.5 when the corpus is too small to tell)."""
    if accuracy is None:
        return 0.5
    return round(min(1.0, max(MERGE_FLOOR, 1.0 - accuracy)), 4)


def describe_auto_share(accuracy: float | None, share: float) -> str:
    if accuracy is None:
        return f"too few texts to tell how well the base knows them: kept {share:.0%} of the adapted weights"
    known = ("it already knows this kind of text, so a light touch" if share <= MERGE_FLOOR
             else "it does not know this kind of text well, so most of what adaptation learned")
    return (f"the base matched {accuracy:.0%} of passage pairs from this corpus before adapting: {known} "
            f"(kept {share:.0%} of the adapted weights; --merge sets another share)")


def span_views(tokenizer, documents: list[list[int]], cfg, rng) -> list[list[int]]:
    """Two random spans of each document (token ids without special tokens): all first views, then all second.

    A document longer than a view gives two windows of ``max_length`` tokens at independent random places; a
    shorter one gives two random crops of ``crop_min`` to all of its length. Special tokens are added back."""
    prefix, suffix = special_frame(tokenizer)
    room = cfg.max_length - len(prefix) - len(suffix)
    views = [[], []]
    for ids in documents:
        for view in views:
            if len(ids) > room:
                length = room
            else:
                length = max(1, int(round(len(ids) * rng.uniform(cfg.crop_min, 1.0)))) if ids else 0
            start = int(rng.integers(0, len(ids) - length + 1))
            view.append(prefix + list(ids[start:start + length]) + suffix)
    return views[0] + views[1]


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] and [SEP] for BERT), found by
    encoding one word with and without them (fast tokenizers in transformers 5 no longer expose the template)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


def _spans_loss(encoder, tokenizer, documents, cfg, rng, par=None):
    return _info_nce(encoder, tokenizer, span_views(tokenizer, documents, cfg, rng), len(documents), cfg.temperature,
                     par=par)


def merge_with_base(model, base_model, share: float) -> None:
    """Weights := ``share`` x adapted + (1 - ``share``) x base, in place (weight-space ensembling, WiSE-FT: Wortsman
    et al. 2022). Continued pretraining moves a sentence encoder away from the tuning that made it good (MiniLM's
    billion pairs); a share below 1 keeps most of a domain gain and most of what the base knew where the corpus
    adds nothing (docs/design/merge-auto.md)."""
    import torch

    if share >= 1:
        return
    base = dict(base_model.named_parameters())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in base and base[name].shape == param.shape and param.is_floating_point():
                param.mul_(share).add_(base[name], alpha=1 - share)


def _tsdae_model(base, encoder):
    """The encoder and a decoder of the same architecture whose weights are the encoder's (tied, as in TSDAE).

    The decoder adds cross-attention (new) and a language-model head (new where the checkpoint has none); every
    other decoder parameter *is* the encoder's, so training the pair trains the encoder that gets saved.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .._context import quiet_transformers

    folder = str(base.transformer_dir())
    config = AutoConfig.from_pretrained(folder, trust_remote_code=base.trust_remote_code)
    config.is_decoder = True
    config.add_cross_attention = True
    try:
        with quiet_transformers():  # "newly initialized cross-attention / head" is the point
            decoder = AutoModelForCausalLM.from_pretrained(folder, config=config,
                                                           trust_remote_code=base.trust_remote_code)
    except (ValueError, OSError) as err:
        raise ConfigError(f"'{base.name}' cannot serve as its own decoder for TSDAE ({type(err).__name__})",
                          hint="use --method simcse") from None
    inner = getattr(decoder, decoder.base_model_prefix)
    modules = dict(inner.named_modules())
    tied = 0
    for name, param in encoder.model.named_parameters():
        owner, _, attr = name.rpartition(".")
        target = modules.get(owner)
        if target is not None and isinstance(getattr(target, attr, None), torch.nn.Parameter):
            setattr(target, attr, param)
            tied += 1
    if not tied:
        raise ConfigError(f"'{base.name}': no decoder weights could be tied to the encoder",
                          hint="use --method simcse")
    decoder.tie_weights()  # the output projection follows the (shared) input embeddings
    return torch.nn.ModuleDict({"encoder": encoder.model, "decoder": decoder})


def _tsdae_loss(encoder, decoder, tokenizer, batch, cfg, rng, vocab=None, group: int = 8, par=None):
    """Delete tokens, pool the rest into one vector, rebuild the original text from that vector.

    The encoder and the decoder both run in groups of similar length (``group`` texts), each padded to its own
    longest text: the loss (mean over the real target tokens) is the one a single padded batch gives. On several
    processes every rank damages the whole batch (the same random draws) and runs its slice of it."""
    import torch

    from ..backbones.text_torch import length_groups, pad_rows

    rows = tokenizer(batch, truncation=True, max_length=cfg.max_length)["input_ids"]
    special = set(tokenizer.all_special_ids)
    damaged = []
    for ids in rows:
        inner = [i for i, t in enumerate(ids) if t not in special]
        keep = [i for i in inner if rng.random() >= cfg.deletion_ratio]
        if inner and not keep:
            keep = [inner[int(rng.integers(len(inner)))]]
        kept = set(keep)
        damaged.append([t for i, t in enumerate(ids) if t in special or i in kept])
    if par is not None and par.distributed:
        mine = par.shard(np.arange(len(rows)))
        rows, damaged = [rows[i] for i in mine], [damaged[i] for i in mine]
        if not rows:
            return _token_mean(0.0, 0, par)
    reps = _encode_rows(encoder, tokenizer, damaged)  # (batch, dim)
    head = getattr(decoder, "cls", None) or getattr(decoder, "lm_head", None)
    total, count = 0.0, 0
    for chunk in length_groups(rows, group):
        full = pad_rows(tokenizer, [rows[i] for i in chunk])
        target = full["input_ids"]
        labels = target[:, 1:].clone()
        labels[full["attention_mask"][:, 1:] == 0] = -100
        inputs = dict(input_ids=target[:, :-1], attention_mask=full["attention_mask"][:, :-1],
                      encoder_hidden_states=reps[torch.as_tensor(chunk)][:, None], use_cache=False)
        keep = labels != -100
        if head is None:  # an architecture whose head we do not know by name: score every position
            logits, wanted = decoder(**inputs).logits[keep], labels[keep]
        else:
            # the vocabulary projection is most of the cost: apply it to real tokens only, not to padding, and
            # where the head has the BERT layout, only over the corpus's own vocabulary (see ``corpus_vocabulary``)
            hidden = getattr(decoder, decoder.base_model_prefix)(**inputs)[0][keep]
            logits = restricted_logits(head, hidden, vocab[0]) if vocab is not None else None
            wanted = labels[keep] if logits is None else vocab[1][labels[keep]]
            if logits is None:
                logits = head(hidden)
        total = total + torch.nn.functional.cross_entropy(logits, wanted, reduction="sum")
        count += int(keep.sum())
    return _token_mean(total, count, par)


def restricted_logits(head, hidden, ids):
    """``head(hidden)[:, ids]`` without computing the other columns, for a BERT-layout head (``predictions`` with
    ``transform`` and a linear ``decoder``); None for any other head."""
    import torch

    predictions = getattr(head, "predictions", None)
    projection = getattr(predictions, "decoder", None)
    if not isinstance(projection, torch.nn.Linear) or not hasattr(predictions, "transform"):
        return None
    bias = projection.bias if projection.bias is not None else predictions.bias
    return predictions.transform(hidden) @ projection.weight[ids].T + bias[ids]


def corpus_vocabulary(tokenizer, texts: list[str], max_length: int):
    """The token ids the corpus uses (special tokens included) and a map from token id to its row among them.

    TSDAE's decoder only ever has to produce tokens of the corpus, so its softmax runs over those (a few thousand)
    instead of the whole vocabulary (30,522 for MiniLM): the projection was half of a step. Tokens that never occur
    only lose the push-down of their logits, which nothing downstream reads (the decoder is thrown away)."""
    import torch

    seen = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 1000):
        for row in tokenizer(texts[start:start + 1000], truncation=True, max_length=max_length)["input_ids"]:
            seen.update(row)
    ids = torch.tensor(sorted(seen), dtype=torch.long)
    position = torch.full((max(len(tokenizer), int(ids.max()) + 1),), -100, dtype=torch.long)
    position[ids] = torch.arange(len(ids))
    return ids, position


def _mlm_loss(model, tokenizer, batch, cfg, rng, par=None):
    """Mask ``mask_probability`` of the real tokens and predict them (BERT's MLM). On several processes every rank
    masks the whole batch (the same random draws) and predicts the masked tokens of its slice of it."""
    rows, labels = mlm_masks(tokenizer, batch, cfg.max_length, cfg.mask_probability, rng)
    if par is not None and par.distributed:
        mine = par.shard(np.arange(len(rows)))
        rows, labels = [rows[i] for i in mine], [labels[i] for i in mine]
        if not rows:
            return _token_mean(0.0, 0, par)
    return mlm_grouped_loss(model, tokenizer, rows, labels, par=par)


def mlm_masks(tokenizer, batch, max_length, probability, rng):
    """Token-id rows with ``[MASK]`` where a token is to be predicted, and label rows: that token, else -100.

    Special tokens are never masked; a batch where no token was drawn gets its first real token masked."""
    special = set(tokenizer.all_special_ids)
    rows, labels = [], []
    for row in tokenizer(batch, truncation=True, max_length=max_length)["input_ids"]:
        draw = rng.random(len(row))
        label = [t if d < probability and t not in special else -100 for t, d in zip(row, draw)]
        rows.append([tokenizer.mask_token_id if lab != -100 else t for t, lab in zip(row, label)])
        labels.append(label)
    if all(lab == -100 for label in labels for lab in label):
        r, i = next(((r, i) for r, row in enumerate(rows) for i, t in enumerate(row) if t not in special), (0, 0))
        labels[r][i], rows[r][i] = rows[r][i], tokenizer.mask_token_id
    return rows, labels


def mlm_grouped_loss(model, tokenizer, rows, labels, group: int = 8, par=None):
    """Mean cross-entropy over the masked tokens, as the masked-LM head's own loss on one padded batch gives.

    The rows run in groups of similar length (less padding), and where the head is known by name (BERT's ``cls``,
    RoBERTa's ``lm_head``) the vocabulary projection runs on the masked positions only, not on every padded one:
    that projection (30,522 words for MiniLM) was about a third of a step."""
    import torch

    from ..backbones.text_torch import length_groups, pad_rows

    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    body = getattr(model, model.base_model_prefix)
    total, count = 0.0, 0
    for chunk in length_groups(rows, group):
        inputs = pad_rows(tokenizer, [rows[i] for i in chunk])
        width = inputs["input_ids"].shape[1]
        pads = [[-100] * (width - len(labels[i])) for i in chunk]
        left = tokenizer.padding_side == "left"
        target = torch.tensor([p + labels[i] if left else labels[i] + p for i, p in zip(chunk, pads)])
        keep = target != -100
        if not keep.any():
            continue
        logits = head(body(**inputs)[0][keep]) if head is not None else model(**inputs).logits[keep]
        total = total + torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum")
        count += int(keep.sum())
    return _token_mean(total, count, par)


def _write_backbone(output: Path, base, model, tokenizer, lineage: dict) -> None:
    """A complete sentence-transformers folder (weights, tokenizer, pooling) + lineage, atomically."""
    from .._context import quiet_transformers

    with AtomicDirectory(output, marker=LINEAGE_FILE) as tmp:
        with quiet_transformers():  # its "writing shards" bar: tenni's progress is enough
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
        _keep_base_weights(base.transformer_dir(), tmp)
        for name in ("sentence_bert_config.json", "config_sentence_transformers.json"):
            if (base.path / name).exists():
                shutil.copy(base.path / name, tmp / name)
        if (base.path / "modules.json").exists():  # the weights now sit at the root, whatever the base's layout
            modules = json.loads((base.path / "modules.json").read_text())
            for module in modules:
                if module.get("type", "").endswith("Transformer"):
                    module["path"] = ""
            (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
        modules_file = base.path / "modules.json"
        for module in json.loads(modules_file.read_text()) if modules_file.exists() else []:
            sub = module.get("path", "")
            if sub and (base.path / sub).is_dir() and not module.get("type", "").endswith("Transformer"):
                shutil.copytree(base.path / sub, tmp / sub)
        languages = getattr(base, "languages", None)
        card = "---\n" + (f"language: {', '.join(languages)}\n" if languages else "") + "---\n"
        card += (f"# Adapted from {base.name}\n\nContinued pretraining ({lineage['method']}) on "
                 f"{lineage['corpus_texts']} texts; {lineage['steps']} steps; weights "
                 f"{lineage['merge_share']:g} x adapted + {1 - lineage['merge_share']:g} x base. "
                 "Made by tenni adapt.\n")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        atomic_write_json(tmp / LINEAGE_FILE, lineage)
    info(f"adapted backbone written to {output} ({lineage['steps']} steps, {lineage['seconds']:.0f} s)")


def _keep_base_weights(base_dir: Path, out_dir: Path) -> None:
    """Copy the weights the base has and the trained model lacks (BERT's pooler, which a masked-LM model does not
    load) into the saved file, so the folder is a complete model that loads without "missing weights"."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    base_file, out_file = Path(base_dir) / "model.safetensors", out_dir / "model.safetensors"
    if not base_file.exists() or not out_file.exists():  # sharded or another format: nothing to complete
        return
    with safe_open(str(out_file), "pt") as saved:
        have = set(saved.keys())
    with safe_open(str(base_file), "pt") as f:
        extra = {key: f.get_tensor(key) for key in set(f.keys()) - have}
    if extra:
        weights = load_file(str(out_file))
        save_file({**weights, **extra}, str(out_file), metadata={"format": "pt"})


def read_lineage(folder: str | Path) -> dict | None:
    """The lineage of an adapted backbone folder; None for any other folder, name or an unreadable file."""
    lineage = Path(folder) / LINEAGE_FILE
    try:
        return json.loads(lineage.read_text()) if lineage.is_file() else None
    except (OSError, ValueError):
        return None


def find_adapted(root: str | Path) -> list[dict]:
    """Adapted backbones (folders with a lineage file) directly under ``root`` or at it."""
    root = Path(root)
    found = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        lineage = read_lineage(folder)
        if lineage is not None:
            found.append(dict(lineage, path=str(folder)))
    return found
