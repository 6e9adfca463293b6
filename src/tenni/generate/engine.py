"""Prompt formatting, batched decoding, per-token loss and the LoRA training loop for causal language models.

One formatter turns a conversation (and its answer) into token ids through the model's own chat template, so
training, prompting and prediction see the same text. The training loss is computed on the output tokens only,
and only those positions go through the output layer: with a 49k-word vocabulary that layer's logits are most of a
small model's activation memory.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._logging import progress
from ..errors import ConfigError, DataError


@dataclass
class Decoding:
    """How outputs are decoded: greedy by default; ``temperature > 0`` samples (with ``top_p``)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    batch_size: int = 8
    seed: int = 0

    def check(self) -> Decoding:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}",
                              hint="e.g. --max-new-tokens 64")
        if not 0 <= float(self.temperature) <= 5:
            raise ConfigError(f"temperature must be between 0 (greedy) and 5, got {self.temperature}",
                              hint="0 for greedy decoding, 0.7 for varied outputs")
        if not 0 < float(self.top_p) <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}", hint="e.g. --top-p 0.9")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        self.stop = [s for s in (self.stop or []) if s]
        return self

    def to_dict(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": float(self.temperature),
                "top_p": float(self.top_p), "stop": list(self.stop)}


PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


class Formatter:
    """Token ids of prompts and answers through the tokenizer's chat template (a plain ``User:/Assistant:`` layout
    when it has none)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.stop_ids = self._stop_ids()

    def prompt_text(self, conversation: list[dict]) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return "".join(f"{PLAIN_ROLES[m['role']]}: {m['content']}\n" for m in conversation) + "Assistant:"

    def answer_text(self, conversation: list[dict], output: str, prompt: str | None = None) -> str:
        """What follows the prompt when the answer is ``output``: the answer and the template's end-of-turn."""
        prompt = self.prompt_text(conversation) if prompt is None else prompt
        if self.chat:
            full = self.tokenizer.apply_chat_template(conversation + [{"role": "assistant", "content": output}],
                                                      tokenize=False)
            if full.startswith(prompt) and output in full[len(prompt):]:
                return full[len(prompt):]
        return (" " if not self.chat else "") + output + (self.tokenizer.eos_token or "")

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, conversation: list[dict]) -> list[int]:
        ids = self.ids(self.prompt_text(conversation))
        bos = self.tokenizer.bos_token_id
        if not self.chat and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def example_ids(self, conversation: list[dict], output: str) -> tuple[list[int], list[int]]:
        prompt = self.prompt_text(conversation)
        ids = self.prompt_ids(conversation)
        return ids, self.ids(self.answer_text(conversation, output, prompt))

    def _stop_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        try:  # the token that ends an assistant turn in the template (e.g. <|im_end|>, <end_of_turn>)
            conv = [{"role": "user", "content": "x"}]
            suffix = self.answer_text(conv, "zq")
            tail = suffix[suffix.index("zq") + 2:]
            tail_ids = self.ids(tail) if tail else []
            special = set(tok.all_special_ids) | set(getattr(tok, "added_tokens_decoder", {}) or {})
            if tail_ids and tail_ids[0] in special:
                ids.add(tail_ids[0])
        except Exception:  # an odd template: the eos token alone
            pass
        return sorted(i for i in ids if i is not None)


def check_lengths(encoded: list[tuple[list[int], list[int] | None]], sources: list[str], limit: int,
                  room: int = 0) -> None:
    """Refuse, naming the file and row, an example whose prompt (+ answer, or + ``room`` new tokens) does not fit
    the context."""
    for (prompt, answer), source in zip(encoded, sources):
        need = len(prompt) + (len(answer) if answer is not None else room)
        if need > limit:
            what = "input + output" if answer is not None else "input (with room for one new token)"
            raise DataError(f"{source}: the {what} take {need} tokens, more than the model's context of {limit}",
                            hint="shorten that input, lower max_new_tokens, or raise max_length if the model allows")


def batches_by_length(lengths: list[int], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); batch order shuffled when ``rng`` is given."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    return groups


def _collate(examples, pad_id: int, *, right: bool = True):
    import torch

    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (p, a) in enumerate(examples):
        seq = list(p) + list(a)
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
        labels[row, len(p):len(seq)] = torch.tensor(list(a), dtype=torch.long)
    return ids, mask, labels


def answer_loss(model, ids, mask, labels, *, reduction: str = "mean"):
    """Cross-entropy of the answer tokens, sending only their positions through the output layer."""
    import torch
    import torch.nn.functional as F

    causal = _causal(model)
    body = causal.base_model if causal.base_model is not causal else None
    head = causal.get_output_embeddings()
    if body is None or head is None:  # an unusual model: the plain path
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        return F.cross_entropy(logits[keep].float(), target[keep], reduction=reduction)
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = head(hidden[keep])
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits.float(), target[keep], reduction=reduction)


def _causal(model):
    """The transformers causal LM inside a PEFT wrapper (or the model itself)."""
    if type(model).__name__.startswith("Peft") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def mean_token_loss(model, encoded: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8) -> float:
    """Average loss per answer token (nats) over ``encoded`` examples."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for group in batches_by_length([len(p) + len(a) for p, a in encoded], batch_size, None):
            ids, mask, labels = _collate([encoded[i] for i in group], pad_id)
            loss = answer_loss(model, ids, mask, labels, reduction="sum")
            total += float(loss)
            count += int((labels[:, 1:] != -100).sum())
    return total / max(count, 1)


def generate(model, formatter: Formatter, prompts: list[list[int]], decoding: Decoding, *, limit: int | None = None,
             label: str = "generating") -> list[str]:
    """Decode an answer for each prompt (token ids), batched by length with left padding; outputs are cut at the
    first stop string. With ``limit`` (the context length) a batch gets at most the new tokens that still fit."""
    import torch

    tok = formatter.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else formatter.stop_ids[0]
    outputs: list[str] = [""] * len(prompts)
    groups = batches_by_length([len(p) for p in prompts], decoding.batch_size, None)
    sample = decoding.temperature > 0
    kwargs = dict(max_new_tokens=decoding.max_new_tokens, do_sample=sample, pad_token_id=pad,
                  eos_token_id=formatter.stop_ids or None)
    if sample:
        kwargs.update(temperature=float(decoding.temperature), top_p=float(decoding.top_p), top_k=0)
        torch.manual_seed(decoding.seed)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    criteria = _stop_criteria(formatter, decoding.stop)
    if criteria is not None:
        kwargs["stopping_criteria"] = criteria
    was_training = model.training
    model.eval()
    with progress(label, len(prompts)) as bar, torch.inference_mode():
        for group in groups:
            width = max(len(prompts[i]) for i in group)
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                p = prompts[i]
                ids[row, width - len(p):] = torch.tensor(p)
                mask[row, width - len(p):] = 1
            if limit is not None:
                kwargs["max_new_tokens"] = max(1, min(decoding.max_new_tokens, limit - width))
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            for row, i in enumerate(group):
                new = out[row, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in formatter.stop_ids), len(new))
                text = tok.decode(new[:cut], skip_special_tokens=True)
                outputs[i] = cut_at_stop(text, decoding.stop).strip()
            bar.advance(len(group))
    if was_training:
        model.train()
    return outputs


def cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


def _stop_criteria(formatter: Formatter, stops: list[str]):
    """Stop a row once its new text holds a stop string (checked on the decoded tail)."""
    if not stops:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    tok = formatter.tokenizer
    longest = max(len(s) for s in stops)

    class _Stop(StoppingCriteria):
        def __init__(self):
            self.start = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.start is None:
                self.start = input_ids.shape[1] - 1
            done = []
            for row in input_ids:
                tail = tok.decode(row[self.start:][-(longest + 8):], skip_special_tokens=True)
                done.append(any(s in tail for s in stops))
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


# --- training ------------------------------------------------------------------------------------------------

def train_adapter(model, encoded_train, encoded_val, pad_id: int, cfg, *, checkpoint: Path | None = None,
                  key: str = "", seed: int = 0) -> dict:
    """Train the trainable (adapter) parameters of ``model`` on answer-token loss.

    Batches group sequences of similar length; with a held-out slice (``encoded_val``) the loss there is measured
    after every epoch, training stops after ``patience`` epochs without improvement, and the best adapter is
    restored. With ``checkpoint`` the state after each epoch is written there (safetensors + JSON) and a later call
    with the same ``key`` resumes from it. Returns the training facts for the manifest.
    """
    import torch

    from .._deadline import check_deadline

    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(encoded_train) / cfg.batch_size)
    epochs = max(cfg.epochs, min(cfg.max_epochs, math.ceil(cfg.min_steps / max(steps_per_epoch, 1))))
    total_steps = epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    from ..strategies import _parallel

    optimizer = _parallel.adamw(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = max(1, int(0.06 * total_steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    state = {"epoch": 0, "step": 0, "best_loss": None, "best_epoch": 0, "bad_epochs": 0, "history": []}
    best = None
    if checkpoint is not None:
        from ..strategies._resume import load_state

        resumed = load_state(checkpoint, key, model, optimizer, scheduler)
        if resumed is not None:
            meta, tensors = resumed
            state = meta["state"]
            best = {n: tensors[f"best.{n}"] for n in names if f"best.{n}" in tensors} or None
            from .._logging import info

            info(f"resuming from {checkpoint}: epoch {state['epoch']} of {epochs}, step {state['step']}")
    lengths = [len(p) + len(a) for p, a in encoded_train]
    par = _parallel.current()
    par = par if par is not None and par.distributed else None  # data-parallel; one process runs the plain loop
    device = params[0].device if params else torch.device("cpu")
    if par is not None:
        with torch.no_grad():  # every rank starts from the main process's adapters
            for p in params:
                _parallel_broadcast(p)
    started = time.perf_counter()
    stopped = "epochs"
    loss = None
    model.train()
    with progress("training (lora)", total_steps) as bar:
        bar.advance(state["step"])
        while state["epoch"] < epochs and state["step"] < total_steps and stopped == "epochs":
            rng = random.Random(seed * 1000 + state["epoch"])
            for group in batches_by_length(lengths, cfg.batch_size, rng):
                if state["step"] >= total_steps:
                    break
                check_deadline()
                if par is None:
                    ids, mask, labels = _collate([encoded_train[i] for i in group], pad_id)
                    loss = answer_loss(model, *(t.to(device) for t in (ids, mask, labels)))
                    loss.backward()
                else:
                    loss = _parallel_answer_loss(par, model, [encoded_train[i] for i in group], pad_id, device)
                if not torch.isfinite(loss):
                    raise ConfigError("the training loss became NaN or infinite (diverged)",
                                      hint="lower learning_rate (e.g. --set learning_rate=1e-4)")
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                bar.advance(1)
                if cfg.budget and time.perf_counter() - started > cfg.budget:
                    stopped = "budget"
                    break
            state["epoch"] += 1
            record = {"epoch": state["epoch"], "step": state["step"],
                      "train_loss": None if loss is None else round(loss.item(), 5)}
            if encoded_val:
                val = mean_token_loss(model, encoded_val, pad_id, cfg.batch_size)
                model.train()
                record["val_loss"] = round(val, 5)
                if state["best_loss"] is None or val < state["best_loss"] - 1e-4:
                    state.update(best_loss=val, best_epoch=state["epoch"], bad_epochs=0)
                    best = {n: p.detach().clone() for n, p in zip(names, params)}
                else:
                    state["bad_epochs"] += 1
                    if state["bad_epochs"] >= cfg.patience:
                        stopped = "early stopping"
            state["history"].append(record)
            if checkpoint is not None:  # one writer (the main process); the other ranks wait for it
                from ..strategies._resume import save_state

                save_state(checkpoint, key, model, set(names), optimizer, scheduler, par, meta={"state": state},
                           tensors={f"best.{n}": t.detach().cpu().contiguous().clone()
                                    for n, t in (best or {}).items()})
    if best is not None:
        with torch.no_grad():
            for n, p in zip(names, params):
                p.copy_(best[n])
    model.eval()
    return {"epochs": state["epoch"], "steps": state["step"], "stopped": stopped, "best_epoch": state["best_epoch"],
            "val_loss": None if state["best_loss"] is None else round(state["best_loss"], 5),
            "history": state["history"], "train_examples": len(encoded_train), "val_examples": len(encoded_val)}


def _parallel_broadcast(tensor) -> None:
    import torch.distributed as dist

    dist.broadcast(tensor.data, src=0)


def _parallel_answer_loss(par, model, rows, pad_id: int, device):
    """One step on this rank's slice of the batch ``rows``: its answer tokens' summed loss over the whole batch's
    answer-token count, backward, gradients summed over the ranks; returns the batch's mean loss (as one process
    computes it)."""
    import numpy as np
    import torch

    total = sum(len(a) for _, a in rows)  # answer tokens of the whole batch, known to every rank
    mine = [rows[i] for i in par.shard(np.arange(len(rows)))]
    share = torch.zeros((), device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    par.bind_gradients(trainable)
    if mine:  # a batch smaller than the world leaves a rank without rows: it still joins the sum
        ids, mask, labels = _collate(mine, pad_id)
        share = answer_loss(model, *(t.to(device) for t in (ids, mask, labels)), reduction="sum") / total
        share.backward()
    par.sum_gradients(trainable)
    return torch.tensor(par.sum_scalar(float(share.detach())))


