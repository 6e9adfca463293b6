"""The one training loop of the strategies that train a network (finetune and lora, on text, images and audio).

AdamW with linear warm-up and decay, optional head-only epochs first (body frozen), class-weighted cross-entropy,
gradient clipping, early stopping on a held-out slice that keeps the best epoch's weights. What differs between
text and media is the inputs adapter: ``train_logits(model, idx, generator)`` (text: batches grouped by length;
images/audio: augmented views), ``eval_logits(model, idx)`` and, on several processes, ``shard(idx, par)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._deadline import check_deadline
from .._logging import progress
from ._resume import load_training_state, save_training_state, training_key


@dataclass
class TrainPlan:
    epochs: int
    batch_size: int
    min_steps: int
    max_epochs: int
    warmup_ratio: float
    patience: int
    validation_fraction: float


def stratified_validation(y: np.ndarray, fraction: float, seed: int, min_per_class: int = 5):
    """Indices (train, val) for early stopping, or (all, None) when classes are too small to spare examples."""
    counts = np.bincount(y)
    if fraction <= 0 or counts[counts > 0].min() < min_per_class:
        return np.arange(len(y)), None
    rng = np.random.default_rng(seed)
    val = []
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(y == c)
        take = max(1, int(round(fraction * len(idx))))
        val.extend(rng.choice(idx, size=take, replace=False).tolist())
    val = np.array(sorted(val))
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


class EarlyStopping:
    """Keeps the weights of the best validation epoch (accuracy first, loss breaks ties) and counts the epochs
    since, for the text and the image/audio training loops alike."""

    def __init__(self, model: nn.Module, patience: int, weight=None):
        self.model, self.patience, self.weight = model, patience, weight
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.best_score, self.best_state, self.bad_epochs = -math.inf, None, 0

    def update(self, logits, y_true) -> dict:
        """Scores one epoch's validation logits; returns what to record for it."""
        proba = logits.softmax(-1)
        val_loss = float(nn.functional.nll_loss(proba.clamp_min(1e-9).log(), y_true, weight=self.weight))
        val_acc = float((proba.argmax(-1) == y_true).float().mean())
        score = val_acc - 1e-3 * val_loss
        if score > self.best_score:
            self.best_score, self.bad_epochs = score, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()
                               if k in self.trainable}
        else:
            self.bad_epochs += 1
        return {"val_loss": val_loss, "val_accuracy": val_acc}

    @property
    def exhausted(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state, strict=False)



def linear_schedule(optimizer, *, head_only_steps: int, warmup_steps: int, total_steps: int):
    """Learning-rate multipliers: 1 during the head-only steps (only the head trains then, at its own rate), then
    linear warm-up over ``warmup_steps`` and linear decay to 0 at ``total_steps``."""
    rest = max(1, total_steps - head_only_steps)

    def factor(step: int) -> float:
        if step < head_only_steps:
            return 1.0
        s = step - head_only_steps
        if s < warmup_steps:
            return s / max(1, warmup_steps)
        return max(0.0, (rest - s) / max(1, rest - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze_norm_stats(model: nn.Module) -> None:
    """Batch-norm layers keep their pretrained statistics (batches of a few images would corrupt them)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_classifier(model: nn.Module, inputs, y: np.ndarray, *, param_groups, plan: TrainPlan,
                     class_weight: np.ndarray | None, seed: int, description: str,
                     head_warmup_epochs: int = 0, soft: np.ndarray | None = None) -> dict:
    """Train ``model`` (an encoder + head with ``model.encoder`` and ``model.head``) on ``inputs`` (an adapter, see
    the module docstring) for the labels ``y``; returns the training record (epochs run, history). ``soft``: one
    probability row per item (a teacher's, in distillation), the targets of the loss instead of ``y``.

    Launched on several processes (torchrun, accelerate launch, ``tenni fit --processes``), each rank runs its
    slice of every global batch and the gradients are summed before the step (see :mod:`._parallel`): the ranks
    end with the same weights, those one process would train on the same global batches (dropout aside).
    """
    from .. import _checkpoints
    from . import _parallel

    par = _parallel.current()  # None: one process on the CPU, the plain loop below
    slot = _checkpoints.next_slot()  # None unless the run keeps checkpoints (tenni fit -o DIR: DIR.partial)
    key = training_key(model, inputs, y, param_groups, plan, class_weight, seed, description, head_warmup_epochs,
                       soft) if slot is not None else ""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_idx, val_idx = stratified_validation(y, plan.validation_fraction, seed, min_per_class=inputs.min_per_class)
    steps_per_epoch = math.ceil(len(train_idx) / plan.batch_size)
    epochs = min(plan.max_epochs, max(plan.epochs, math.ceil(plan.min_steps / steps_per_epoch)))
    warm = min(head_warmup_epochs, max(epochs - 1, 0))
    total = epochs * steps_per_epoch
    optimizer = _parallel.adamw(param_groups)
    scheduler = linear_schedule(optimizer, head_only_steps=warm * steps_per_epoch, total_steps=total,
                                warmup_steps=int(plan.warmup_ratio * (total - warm * steps_per_epoch)))
    weight = None if class_weight is None else torch.as_tensor(class_weight)
    y_t = torch.as_tensor(y, dtype=torch.long)
    soft_t = None if soft is None else torch.as_tensor(soft, dtype=torch.float32)

    def loss_share(logits, rows, batch):
        """The loss over ``rows`` as their part of the mean over the global batch ``batch`` (one process: the
        batch's mean), against the labels or, in distillation, the teacher's probabilities."""
        if soft_t is None:
            return _parallel.weighted_loss_share(logits, y_t[rows], weight, y_t[batch])
        return _parallel.soft_loss_share(logits, soft_t[rows], weight, soft_t[batch])

    body = [p for p in model.encoder.parameters() if p.requires_grad]
    stopper, history = EarlyStopping(model, plan.patience, weight), []
    first_epoch, steps, before, finished = 0, 0, 0.0, False
    if slot is not None and slot.resume:
        resumed = load_training_state(slot, key, model, optimizer, scheduler, rng, gen, stopper)
        if resumed is not None:
            first_epoch, steps, before, history, finished = (resumed["epoch"], resumed["steps"], resumed["seconds"],
                                                             resumed["history"], resumed["finished"])
    detach = par.attach(model) if par else None
    if par is not None and par.distributed:
        par.broadcast_from_main(model)
    scaler = torch.amp.GradScaler("cuda") if par and par.precision == "fp16" else None
    started = time.perf_counter()
    with progress(description, total) as bar, _parallel.SparseTables(model) as tables:
        bar.advance(first_epoch * steps_per_epoch)
        for epoch in range(first_epoch, 0 if finished else epochs):
            head_only = epoch < warm
            for p in body:
                p.requires_grad_(not head_only)
            model.train()
            freeze_norm_stats(model)
            order = rng.permutation(train_idx)
            running = 0.0
            for start in range(0, len(order), plan.batch_size):
                check_deadline()
                idx = order[start:start + plan.batch_size]
                if par is None:
                    loss = loss_share(inputs.train_logits(model, idx, gen), idx, idx)
                    loss.backward()
                    tables.densify()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                else:
                    loss = _parallel_backward(par, model, inputs, idx, loss_share, gen, scaler, tables)
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += float(loss.detach()) * len(idx)
                steps += 1
                bar.advance(1)
            record = {"epoch": epoch + 1, "train_loss": running / len(order)}
            if warm:
                record["head_only"] = head_only
            if val_idx is not None and not head_only:
                record.update(stopper.update(inputs.eval_logits(model, val_idx), y_t[val_idx]))
            history.append(record)
            done = val_idx is not None and stopper.exhausted
            if slot is not None:
                save_training_state(slot, key, model, optimizer, scheduler, rng, gen, stopper, par,
                                    epoch=epoch + 1, steps=steps, history=history,
                                    seconds=before + time.perf_counter() - started,
                                    finished=done or epoch + 1 == epochs)
            if done:
                bar.update(completed=total)
                break
    seconds = before + time.perf_counter() - started
    if detach is not None:
        detach()  # back on the CPU, where prediction and saving expect it
    for p in body:
        p.requires_grad_(True)
    stopper.restore()
    model.eval()
    record = {"epochs_run": len(history), "history": history, "early_stopping": val_idx is not None,
              "steps": steps, "train_seconds": round(seconds, 3)}
    if first_epoch:
        record["resumed_after_epoch"] = first_epoch
    if par is not None:
        record.update(world_size=par.world, device=par.device, precision=par.precision)
    return record


def _parallel_backward(par, model, inputs, idx, loss_share, gen, scaler, tables):
    """One step's forward and backward on this rank's slice of the global batch ``idx``, gradients summed over
    the ranks; returns the global batch's loss (the same number one process would compute)."""
    mine = inputs.shard(idx, par) if par.distributed else idx
    share = torch.zeros(())
    if par.distributed:
        par.bind_gradients(model.parameters())
    if len(mine):  # a last batch smaller than the world leaves a rank without rows: it still joins the sum
        with par.autocast():
            logits = inputs.train_logits(model, mine, gen)
        share = loss_share(logits.float(), mine, idx)
        (scaler.scale(share) if scaler is not None else share).backward()
        tables.densify()
    if not par.distributed:
        return share
    par.sum_gradients(model.parameters(), tables.touched)
    return torch.tensor(par.sum_scalar(float(share.detach())))
