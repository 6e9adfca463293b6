"""Data-parallel training, device and mixed precision for the training loop (:mod:`._training`).

A run started by ``torchrun`` / ``python -m torch.distributed.run``, ``accelerate launch`` or ``tenni fit
--processes N`` has ``WORLD_SIZE`` > 1 in its environment: Hugging Face Accelerate's ``PartialState`` then sets up
the process group (gloo on CPU, NCCL on GPUs; its launcher's options and config files apply as usual), every rank
draws the same shuffled global batch (same seed), runs its own slice of it, and the gradients are summed across
ranks before each optimizer step. Each rank's loss is its share of the global batch's (class-weighted) mean, so
the summed gradient is the single-process gradient of the same global batch, and every rank steps to the same
weights. One all-reduce of the flattened gradients per step, not DDP's hooks: the text adapter runs a batch in
several length groups, and encoders return outputs (BERT's pooler) that take no part in the loss.

``TENNI_DEVICE`` (cpu | cuda | auto) and ``TENNI_PRECISION`` (no | bf16 | fp16 | auto; else Accelerate's
``ACCELERATE_MIXED_PRECISION``) choose where and how a model trains. When none of this applies (one process,
CPU, full precision) :func:`current` returns None and the loop runs exactly as it always has.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError

DEVICES = ("cpu", "cuda", "auto")
SPARSE_ROWS = 4096
"""A 2-D parameter with at least this many rows (a token-embedding table) has its gradient synchronised by rows."""
PRECISIONS = ("no", "bf16", "fp16", "auto")


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    return rank() == 0


def resolve_device(value: str | None = None) -> str:
    value = (value or os.environ.get("TENNI_DEVICE") or "cpu").strip().lower()
    if value not in DEVICES:
        raise ConfigError(f"unknown device '{value}'", hint=f"choose one of: {', '.join(DEVICES)}")
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device here",
                          hint="use --device auto (a GPU where there is one) or cpu")
    return value


def resolve_precision(device: str, value: str | None = None) -> str:
    value = (value or os.environ.get("TENNI_PRECISION") or os.environ.get("ACCELERATE_MIXED_PRECISION")
             or "auto").strip().lower()
    if value not in PRECISIONS:
        raise ConfigError(f"unknown precision '{value}'", hint=f"choose one of: {', '.join(PRECISIONS)}")
    if value == "auto":  # bf16 where the GPU has it; full precision on CPU (bf16 there is slower on most CPUs)
        return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if value == "fp16" and device != "cuda":
        raise ConfigError("fp16 mixed precision needs a GPU", hint="use --precision bf16 or no on CPU")
    return value


@dataclass
class Parallel:
    """How this process trains: its rank among ``world`` processes, on ``device``, in ``precision``."""

    world: int
    rank: int
    device: str
    precision: str
    _buckets: _Buckets | None = field(default=None, repr=False, compare=False)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of a global batch (the slices of all ranks make the whole batch)."""
        return np.array_split(idx, self.world)[self.rank]

    def autocast(self):
        if self.precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device, dtype=dtype)

    def _buffered(self, params) -> list:
        """The parameters whose gradients live in the flat buffer, in the buffer's order (last first, the order
        the backward produces their gradients): trainable, not a table, laid out contiguously (a channels-last
        convolution's weight is not: a flat view would not match its layout)."""
        dense = [p for p in params if p.requires_grad and not _is_table(p) and p.is_contiguous()]
        return dense[::-1] if dense and len({(p.dtype, p.device) for p in dense}) == 1 else []

    def bind_gradients(self, params) -> None:
        """Before a backward: the gradients of the buffered parameters become views of one zeroed flat buffer,
        which autograd adds into in place (as DDP's ``gradient_as_bucket_view``), and each bucket of the buffer
        is all-reduced, asynchronously, as soon as the backward has filled it (:class:`_Buckets`), while the
        backward goes on with the layers below. :meth:`sum_gradients` waits for them."""
        dense = self._buffered(params)
        if not dense:
            return
        key = tuple(id(p) for p in dense)
        if self._buckets is None or self._buckets.key != key:
            self._buckets = _Buckets(dense, key)
        self._buckets.start()

    def sum_gradients(self, params, touched: dict | None = None) -> None:
        """Gradients summed over the ranks; a parameter that got no gradient counts as zeros (the same on every
        rank, so all ranks keep the same set of gradients). The buffer of :meth:`bind_gradients` is summed in
        buckets (those the backward did not launch go now, in order); everything else is copied into one flat
        tensor, all-reduced and copied back. Which collectives run, and in what order, depends only on the
        parameters and on numbers every rank has, never on one rank's timing, so the ranks' calls always match.

        A token-embedding table (a parameter of many rows) gets gradient only in the rows of the tokens a batch
        holds: one small all-reduce of which rows any rank touched, then only those rows travel (on MiniLM about
        half the weights, and most of the bytes, stay home). Rows no rank touched are zero in the sum anyway.
        ``touched``: the rows each table's lookups read, by ``id`` of the table (:class:`SparseTables` knows
        them); else the rows with any non-zero entry."""
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        buffered = self._buffered(params)
        if self._buckets is None or self._buckets.key != tuple(id(p) for p in buffered):
            if self._buckets is not None and self._buckets.active:
                raise RuntimeError("sum_gradients got other parameters than bind_gradients bound")
            buffered = []
        else:
            self._buckets.finish()
        in_buffer = {id(p) for p in buffered}
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        tables = [p for p in params if _is_table(p)]
        rest = [p for p in params if not _is_table(p) and id(p) not in in_buffer]
        rows = {}
        if tables:
            touched = touched or {}
            hit = []
            for p in tables:
                if id(p) in touched:
                    mask = torch.zeros(p.shape[0], dtype=torch.uint8, device=p.device)
                    mask[touched[id(p)].to(p.device)] = 1
                else:
                    mask = (p.grad != 0).any(dim=1).to(torch.uint8)
                hit.append(mask)
            hit = torch.cat(hit)
            dist.all_reduce(hit, op=dist.ReduceOp.MAX)
            offset = 0
            for p in tables:
                rows[id(p)] = hit[offset:offset + p.shape[0]].nonzero().squeeze(1)
                offset += p.shape[0]
        parts = [p.grad[rows[id(p)]] for p in tables] + [p.grad for p in rest]
        if not parts:
            return
        flat = torch.cat([t.reshape(-1) for t in parts])
        dist.all_reduce(flat)
        offset = 0
        for p, part in zip(tables + rest, parts):
            summed = flat[offset:offset + part.numel()].view_as(part)
            if id(p) in rows:
                p.grad.index_copy_(0, rows[id(p)], summed)
            else:
                p.grad.copy_(summed)
            offset += part.numel()

    def broadcast_from_main(self, model: torch.nn.Module) -> None:
        """Every rank starts from the main process's weights (as DDP does): a head initialised at random, or
        anything else drawn from a process's own random state, is the same everywhere from here on."""
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def sum_scalar(self, value: float) -> float:
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)  # NCCL reduces GPU tensors only
        dist.all_reduce(t)
        return float(t[0])

    def split_sizes(self, n: int) -> list[int]:
        """How many of ``n`` rows each rank's :meth:`shard` holds, in rank order."""
        return [len(part) for part in np.array_split(np.arange(n), self.world)]

    def gather_rows(self, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """The rows of all ranks in rank order (rank r gave ``sizes[r]`` of them, ``local`` here), for a loss that
        needs the whole global batch (contrastive: every row against every other). The other ranks' rows arrive
        without autograd; this rank's keep theirs (the CLIP / sentence-transformers gather), so each rank's
        backward gives d(loss)/d(its own rows) only, and :meth:`sum_gradients` adds those up to the gradient one
        process computes on the whole batch. ``local`` is (sizes[rank], ...), possibly with no rows."""
        import torch.distributed as dist

        width, device = max(sizes), torch.device(self.device)  # gloo and NCCL gather tensors of one shape
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=device)
        padded[:len(local)] = local.detach().to(device)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        rows = [part[:n].to(local.device) for part, n in zip(parts, sizes)]
        rows[self.rank] = local
        return torch.cat(rows)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def attach(self, model: torch.nn.Module):
        """Move ``model`` to the device; its inputs follow it and its outputs come back to the CPU (in float32),
        so the loop's labels, losses and metrics stay where they were. Returns a function that undoes it."""
        if self.device == "cpu":
            return lambda: None
        device = torch.device(self.device)
        model.to(device)

        def to_device(module, args, kwargs):
            def move(v):
                return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

            return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

        def to_cpu(module, args, kwargs, output):
            return output.float().cpu() if isinstance(output, torch.Tensor) else output

        handles = [model.register_forward_pre_hook(to_device, with_kwargs=True),
                   model.register_forward_hook(to_cpu, with_kwargs=True)]

        def detach():
            for h in handles:
                h.remove()
            model.to("cpu")

        return detach


BUCKET = 2_500_000
"""Gradient values per bucket of the flat buffer (10 MB in float32; MiniLM's dense weights make 5)."""


class _Buckets:
    """The flat gradient buffer of :meth:`Parallel.bind_gradients`, cut into buckets, each all-reduced
    asynchronously once the backward has filled it (DDP's scheme, without DDP's wrapper: the loops run a batch in
    several length groups and have outputs no loss uses). Buckets go out in a fixed order (a bucket waits for the
    ones before it), so the ranks' collectives match whatever order their gradients arrive in.

    A parameter counts toward its bucket if it got a gradient in the last step (at first: every one; a parameter
    the loss never reaches, such as BERT's pooler, then stops holding its bucket back). Those are bound as views
    of the buffer; any other gets its own gradient, copied into the buffer if its bucket has not gone yet, else
    summed afterwards in a fix-up all-reduce that every rank joins when any rank needs it."""

    def __init__(self, dense: list, key: tuple):
        import weakref

        self.key, self.params = key, dense
        self.buffer = torch.zeros(sum(p.numel() for p in dense), dtype=dense[0].dtype, device=dense[0].device)
        self.views, self.bucket_of, self.bounds = {}, {}, []
        offset, start = 0, 0
        for p in dense:
            self.views[id(p)] = self.buffer[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
            self.bucket_of[id(p)] = len(self.bounds)
            if offset - start >= BUCKET or p is dense[-1]:
                self.bounds.append((start, offset))
                start = offset
        self.expected = {id(p) for p in dense}
        self.active = False
        ref = weakref.ref(self)

        def hook(p):
            buckets = ref()
            if buckets is not None and buckets.active:
                buckets.arrived(p)

        handles = [p.register_post_accumulate_grad_hook(hook) for p in dense]
        weakref.finalize(self, lambda: [h.remove() for h in handles])

    def start(self) -> None:
        """Before a backward: zero the buffer, bind the expected parameters' gradients to it."""
        self.buffer.zero_()
        self.remaining = [0] * len(self.bounds)
        for p in self.params:
            p.grad = self.views[id(p)] if id(p) in self.expected else None
            if id(p) in self.expected:
                self.remaining[self.bucket_of[id(p)]] += 1
        self.launched, self.works, self.arrivals, self.late = 0, [], set(), {}
        self.active = True
        self._launch()

    def arrived(self, p) -> None:
        pid, k = id(p), self.bucket_of[id(p)]
        if pid in self.arrivals:  # a second backward through it (reentrant checkpointing): counted once
            if k < self.launched:
                raise RuntimeError("a gradient arrived twice in one step, after its bucket was sent: run one "
                                   "backward per step (non-reentrant checkpointing)")
            return
        self.arrivals.add(pid)
        view = self.views[pid]
        if p.grad.data_ptr() != view.data_ptr():
            if k < self.launched:  # its bucket is on the wire: summed in the fix-up
                self.late[pid] = p.grad
                return
            view.copy_(p.grad)
            p.grad = view
        if pid in self.expected:
            self.remaining[k] -= 1
            self._launch()

    def _launch(self, every: bool = False) -> None:
        """Send the buckets that are full, in order (``every``: all that are left)."""
        import torch.distributed as dist

        while self.launched < len(self.bounds) and (every or self.remaining[self.launched] == 0):
            a, b = self.bounds[self.launched]
            self.works.append(dist.all_reduce(self.buffer[a:b], async_op=True))
            self.launched += 1

    def finish(self) -> None:
        """After the backward: the buckets not yet sent go, all are waited for, late gradients are summed."""
        import torch.distributed as dist

        self.active = False
        for p in self.params:  # a gradient put elsewhere without the backward's hook (set by hand, or replaced)
            grad, view = p.grad, self.views[id(p)]
            if grad is not None and grad.data_ptr() != view.data_ptr() and id(p) not in self.late:
                if self.bucket_of[id(p)] < self.launched:
                    self.late[id(p)] = grad
                else:
                    view.copy_(grad)
        self._launch(every=True)
        for work in self.works:
            work.wait()
        flags = torch.tensor([id(p) in self.late for p in self.params], dtype=torch.uint8, device=self.buffer.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        fix = [p for p, f in zip(self.params, flags.tolist()) if f]
        if fix:
            flat = torch.cat([self.late.get(id(p), torch.zeros_like(p)).reshape(-1) for p in fix])
            dist.all_reduce(flat)
            offset = 0
            for p in fix:
                self.views[id(p)].add_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        for p in self.params:
            p.grad = self.views[id(p)]
        self.expected, self.late = self.arrivals or self.expected, {}


def _is_table(p: torch.Tensor) -> bool:
    return p.dim() == 2 and p.shape[0] >= SPARSE_ROWS


class SparseTables:
    """While training, token-embedding tables (``nn.Embedding`` of many rows whose weight no other module uses)
    return row-sparse gradients, which :meth:`densify` adds into one buffer per table kept across steps. The
    dense gradient autograd builds otherwise is a fresh tensor the table's size every step (47 MB on MiniLM),
    mostly page faults: 21 ms a step on one thread, 2 ms this way. A context manager; the modules are put back."""

    def __init__(self, model: torch.nn.Module):
        uses: dict[int, int] = {}
        for _, p in model.named_parameters(remove_duplicate=False):
            uses[id(p)] = uses.get(id(p), 0) + 1
        self.modules = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and not m.sparse
                        and m.weight.requires_grad and m.num_embeddings >= SPARSE_ROWS
                        and uses.get(id(m.weight)) == 1]
        self._buffers: dict[int, torch.Tensor] = {}
        self.touched: dict[int, torch.Tensor] = {}
        """The rows each table's lookups read in the last backward, by ``id`` of its weight (for
        ``Parallel.sum_gradients``)."""

    def __enter__(self):
        for m in self.modules:
            m.sparse = True
        return self

    def __exit__(self, *exc):
        for m in self.modules:
            m.sparse = False
            if m.weight.grad is not None and m.weight.grad.is_sparse:
                m.weight.grad = None

    def densify(self) -> None:
        """After a backward: each table's sparse gradient as a dense one (what the optimizer and clipping take)."""
        for m in self.modules:
            grad = m.weight.grad
            if grad is None or not grad.is_sparse:
                self.touched.pop(id(m.weight), None)
                continue
            grad = grad.coalesce()
            self.touched[id(m.weight)] = grad.indices()[0]
            buffer = self._buffers.get(id(m))
            if buffer is None:
                buffer = self._buffers[id(m)] = torch.zeros_like(m.weight)
            else:
                buffer.zero_()
            buffer.index_add_(0, grad.indices()[0], grad.values().to(buffer.dtype))
            m.weight.grad = buffer


def adamw(params, **options) -> torch.optim.AdamW:
    """AdamW, fused (one kernel over all tensors) where torch has it for these parameters: on CPU it steps MiniLM
    about 7x faster than the per-tensor loop, a quarter of a fine-tuning step's time; the same update up to
    rounding, the same state. Not for weights stored out of order (channels-last convolutions): the CPU kernel
    walks weights, gradients and moments in memory order."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and all(p.is_floating_point() and p.is_contiguous() for p in tensors) \
            and len({p.device.type for p in tensors}) == 1 and tensors[0].device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, fused=True, **options)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, **options)


_STATE = None


def current() -> Parallel | None:
    """The training setup of this process, or None for the plain path (one process, CPU, full precision)."""
    global _STATE
    world = world_size()
    device = resolve_device()
    precision = resolve_precision(device)
    if world == 1 and device == "cpu" and precision == "no":
        return None
    if world > 1 and _STATE is None:
        # Accelerate reads its launcher's environment (torchrun's too) and starts the process group: gloo on CPU,
        # NCCL on GPUs
        from accelerate import PartialState

        _STATE = PartialState(cpu=device == "cpu")
        if _STATE.num_processes != world:
            raise ConfigError(f"WORLD_SIZE is {world} but the process group has {_STATE.num_processes} processes",
                              hint="start the run with torchrun, accelerate launch or tenni fit --processes")
    if device == "cuda" and world > 1:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Parallel(world=world, rank=rank(), device=device, precision=precision)


def weighted_loss_share(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                        global_y: torch.Tensor) -> torch.Tensor:
    """This rank's part of the global batch's class-weighted mean cross-entropy: sum(w_i * l_i) over its rows,
    divided by sum(w_i) over the whole global batch (``global_y``); the parts of all ranks add up to the mean."""
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    if weight is None:
        return losses.sum() / len(global_y)
    return (weight[y] * losses).sum() / weight[global_y].sum()


def soft_loss_share(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None,
                    global_targets: torch.Tensor) -> torch.Tensor:
    """The same share for soft targets (a teacher's probabilities, in distillation): sum over this rank's rows of
    sum_c w_c t_ic (-log p_ic), over the global batch's sum of w_c t_ic; with one-hot targets it is
    :func:`weighted_loss_share`."""
    w = torch.ones(targets.shape[1]) if weight is None else weight.to(targets.dtype)
    return -(targets * w * logits.log_softmax(-1)).sum() / (global_targets * w).sum()
