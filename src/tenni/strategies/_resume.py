"""Resumable checkpoints of the training loops (:mod:`._training`, setfit's tuning): after an epoch (or a share of
the steps), everything the rest of training depends on — the trainable weights, the optimizer's moments, the
schedule, the random states, and what the loop adds (early stopping's best weights and count) — goes to the run's
slot (:mod:`tenni._checkpoints`), so a run continued with ``--resume`` ends with the weights the uninterrupted run
would have. Tensors in safetensors and the rest in JSON: loading a checkpoint runs no code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import torch

STATE = "state.json"
TENSORS = "state.safetensors"


def state_key(model, parts, feed=None) -> str:
    """A key of one training call: ``parts`` (JSON-able settings), what ``feed(digest)`` adds (the data), and the
    model's starting weights."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode())
    if feed is not None:
        feed(digest)
    with torch.no_grad():
        for name, p in model.named_parameters():
            digest.update(f"{name}{tuple(p.shape)}{float(p.double().sum())!r}".encode())
    return digest.hexdigest()[:32]


def training_key(model, inputs, y, param_groups, plan, class_weight, seed, description, head_warmup_epochs,
                 soft=None) -> str:
    """The classifier loop's key: its data, labels (soft targets too), plan, optimizer settings and starting
    weights."""
    settings = [{k: v for k, v in g.items() if k != "params"} for g in param_groups]

    def feed(digest):
        digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        if soft is not None:
            digest.update(np.ascontiguousarray(soft, dtype=np.float64).tobytes())
        inputs.update_digest(digest)

    return state_key(model, [description, asdict(plan), int(seed), head_warmup_epochs, settings,
                             None if class_weight is None else [float(w) for w in class_weight]], feed)


def save_state(folder, key, model, trainable, optimizer, scheduler, par, *, tensors=None, meta=None) -> None:
    """Write the weights named in ``trainable``, the optimizer, the schedule and torch's random state, plus the
    loop's own ``tensors`` and ``meta``, into ``folder`` (atomically; only the main process writes, the
    others wait for it, so every rank can read it back on resume)."""
    from safetensors.torch import save_file

    from .._paths import AtomicDirectory, atomic_write_json

    if par is None or par.rank == 0:
        out = {f"model.{n}": p.detach().cpu().contiguous().clone() for n, p in model.named_parameters()
               if n in trainable}
        opt = optimizer.state_dict()
        scalars = {}
        for pid, state in opt["state"].items():
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    out[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        out["rng.torch"] = torch.get_rng_state()
        out.update(tensors or {})
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        record = dict(meta or {}, key=key, optimizer={"param_groups": opt["param_groups"], "scalars": scalars},
                      scheduler=sched)
        with AtomicDirectory(folder, marker=STATE) as tmp:
            save_file(out, str(tmp / TENSORS))
            atomic_write_json(tmp / STATE, record)
    if par is not None and par.distributed:
        import torch.distributed as dist

        dist.barrier()


def load_state(folder, key, model, optimizer, scheduler) -> tuple[dict, dict] | None:
    """Restore what :func:`save_state` wrote in ``folder`` if it belongs to this training call (same ``key``):
    (meta, tensors), or None."""
    from safetensors.torch import load_file

    from .._logging import info

    try:
        meta = json.loads((folder / STATE).read_text())
        tensors = load_file(str(folder / TENSORS))
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        info(f"the checkpoint in {folder} belongs to another training (data, options or weights differ): "
             "not resuming from it")
        return None
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f"model.{n}" in tensors:
                p.copy_(tensors[f"model.{n}"])
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, values in meta["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict(dict(meta["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
    torch.set_rng_state(tensors["rng.torch"])
    return meta, tensors


def save_training_state(slot, key, model, optimizer, scheduler, rng, gen, stopper, par, *, epoch, steps, history,
                        seconds, finished) -> None:
    """The classifier loop's state after ``epoch`` epochs (with its generators and early stopping)."""
    tensors = {"rng.generator": gen.get_state()}
    for k, v in (stopper.best_state or {}).items():
        tensors[f"best.{k}"] = v.detach().cpu().contiguous().clone()
    meta = {"epoch": epoch, "steps": steps, "seconds": round(seconds, 3), "finished": finished, "history": history,
            "numpy_rng": rng.bit_generator.state,
            "early_stopping": {"best_score": stopper.best_score, "bad_epochs": stopper.bad_epochs,
                               "has_best": stopper.best_state is not None}}
    save_state(slot.folder, key, model, stopper.trainable, optimizer, scheduler, par, tensors=tensors, meta=meta)


def load_training_state(slot, key, model, optimizer, scheduler, rng, gen, stopper) -> dict | None:
    from .._logging import info

    loaded = load_state(slot.folder, key, model, optimizer, scheduler)
    if loaded is None:
        return None
    meta, tensors = loaded
    rng.bit_generator.state = meta["numpy_rng"]
    gen.set_state(tensors["rng.generator"])
    es = meta["early_stopping"]
    stopper.best_score, stopper.bad_epochs = float(es["best_score"]), int(es["bad_epochs"])
    if es["has_best"]:
        stopper.best_state = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    info(f"resuming training from its checkpoint after epoch {meta['epoch']} ({slot.folder})")
    return meta
