"""Affine 4-bit linear layers in blocks of 32 (the GGUF Q4_1 layout: ``w = q * d + m``, ``q`` in 0..15, an fp16
``d`` and ``m`` per block): qlora's base where the model already came as 4-bit blocks.

A base expanded from a Q4_0/Q4_1 GGUF (the offline SmolLM2) is already on this grid (Q4_0's ``w = d * (q - 8)`` is
the case ``m = -8d``), so storing it this way loses nothing: the blocks are recovered exactly from the expanded
weights, and LoRA trains over the same function as
lora's fp32 base at 5 bits a weight. bitsandbytes' NF4 instead re-rounds those weights to another grid (0.45 nats
of answer-token loss on SmolLM2: docs/benchmarks.md). On any other base this is plain round-to-nearest 4-bit with a
scale and offset per 32 weights. Pure PyTorch (no kernels): each call dequantizes the layer's weights, so qlora
keeps gradient checkpointing on to hold one layer's expanded weights at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 32


class Q4Linear(nn.Module):
    """A frozen linear layer stored as 4-bit blocks (two codes a byte) with an fp16 scale and offset per block."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        blocks = w.reshape(self.out_features, -1, BLOCK)
        low, high = blocks.min(-1, keepdim=True).values, blocks.max(-1, keepdim=True).values
        # two grids per block, each kept where it holds the block more closely: the scale and offset as a Q4_1
        # file stores them (fp16), and Q4_0's (w = d * (q - 8), its largest-magnitude weight at q = 0, so d may be
        # negative; -8d is exact in fp16), which need not reach code 15 and so is not the first grid
        biggest = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True))
        d = (-biggest / 8).half()
        grids = [(((high - low) / 15).half(), low.half()), (d, (-8 * d.float()).half())]
        fits = []
        for scale, offset in grids:
            step = torch.where(scale == 0, torch.ones_like(scale), scale).float()
            q = torch.round((blocks - offset.float()) / step).clamp(0, 15)
            fits.append((q, (q * scale.float() + offset.float() - blocks).abs().amax(-1, keepdim=True)))
        q40 = fits[1][1] < fits[0][1]
        scale = torch.where(q40, grids[1][0], grids[0][0])
        offset = torch.where(q40, grids[1][1], grids[0][1])
        codes = torch.where(q40, fits[1][0], fits[0][0]).to(torch.uint8)
        self.register_buffer("codes", (codes[..., :BLOCK // 2] | (codes[..., BLOCK // 2:] << 4)).contiguous())
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def dequantize(self) -> torch.Tensor:
        codes = torch.cat([self.codes & 15, self.codes >> 4], dim=-1).float()
        return (codes * self.scale.float() + self.offset.float()).reshape(self.out_features, self.in_features)

    @property
    def weight(self) -> torch.Tensor:
        """The expanded weights (what PEFT reads for the adapters' device and dtype, and what a merge adds to)."""
        return self.dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def quantize_linears(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> dict:
    """Every ``nn.Linear`` of ``model`` whose input width is a whole number of blocks, except ``skip`` (the output
    layer, often tied to the embeddings), replaced in place by a :class:`Q4Linear`. Returns how many were replaced,
    how many kept in full precision, and the largest change to any weight (0.0: the base was on this grid)."""
    replaced, kept, largest = 0, 0, 0.0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or name in skip:
                continue
            if child.in_features % BLOCK:
                kept += 1
                continue
            q4 = Q4Linear(child)
            largest = max(largest, float((q4.dequantize() - child.weight.detach().float()).abs().max()))
            setattr(parent, name, q4)
            replaced += 1
    return {"replaced": replaced, "kept": kept, "max_change": largest}


def q4_target_names(model: nn.Module) -> list[str]:
    """The leaf names of the model's 4-bit layers, for LoRA's ``target_modules`` (``all-linear`` sees only
    ``nn.Linear``)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, Q4Linear)})
