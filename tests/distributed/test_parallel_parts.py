"""The pieces that make data-parallel steps cheap, each checked against the plain way: length groups planned by
cost, a batch split so ranks finish together, rows of a gradient table found non-zero, gradients summed in place
from one flat buffer, fused AdamW."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch

from tenni.backbones.text_torch import Tokenized, length_groups, planned_cost, planned_groups
from tenni.strategies import _parallel
from tenni.strategies._torch import TextInputs


def _cost(lengths, groups, overhead):
    return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)


def _brute_force(lengths, group, overhead):
    """The cheapest cut of the sorted lengths into runs of at most ``group``, by trying every cut."""
    ordered = sorted(lengths)
    best = None
    for mask in itertools.product([0, 1], repeat=len(ordered) - 1):
        cuts = [0] + [i + 1 for i, m in enumerate(mask) if m] + [len(ordered)]
        runs = [ordered[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        if all(len(r) <= group for r in runs):
            cost = sum(overhead + len(r) * r[-1] for r in runs)
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_planned_groups_cover_the_rows_and_cost_least(seed):
    rng = np.random.default_rng(seed)
    lengths = list(rng.integers(3, 60, size=int(rng.integers(1, 11))))
    rows = [[1] * n for n in lengths]
    groups = planned_groups(rows, group=4, overhead=30)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(rows)))
    assert all(1 <= len(g) <= 4 for g in groups)
    assert _cost(lengths, groups, 30) == pytest.approx(_brute_force(lengths, 4, 30))
    assert planned_cost(lengths, group=4, overhead=30) == pytest.approx(_brute_force(lengths, 4, 30))


def test_planned_groups_set_a_long_text_apart_and_keep_similar_ones_together():
    rows = [[1] * n for n in (10, 11, 12, 10, 11, 60)]
    groups = planned_groups(rows, group=8, overhead=20)
    assert [sorted(g.tolist()) for g in groups] == [[0, 1, 2, 3, 4], [5]]
    # fixed groups of 3 pad two short texts to the long one
    assert _cost([len(r) for r in rows], groups, 20) < _cost([len(r) for r in rows], length_groups(rows, 3), 20)


def _inputs(lengths) -> TextInputs:
    data = Tokenized.__new__(Tokenized)
    data.rows = [[1] * n for n in lengths]
    data.row_spans = np.stack([np.arange(len(lengths)), np.arange(1, len(lengths) + 1)], axis=1)
    return TextInputs(data)


def _rank(rank: int, world: int) -> _parallel.Parallel:
    return _parallel.Parallel(world=world, rank=rank, device="cpu", precision="no")


@pytest.mark.parametrize("world", [2, 3])
def test_shard_gives_every_row_to_one_rank_and_balances_the_work(world):
    lengths = [58, 60, 57, 8, 9, 10, 12, 9, 11, 10, 9, 8, 12, 11, 10, 9]  # the long texts first: contiguous
    idx = np.arange(16)[::-1]                                               # slices put them on one rank
    inputs = _inputs(lengths)
    parts = [inputs.shard(idx, _rank(r, world)) for r in range(world)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(16))
    again = [inputs.shard(idx, _rank(r, world)).tolist() for r in range(world)]
    assert again == [p.tolist() for p in parts]  # same split

    def work(rows):
        return planned_cost([lengths[i] for i in rows])

    assert max(work(p) for p in parts) < max(work(p) for p in np.array_split(idx, world))
    assert max(work(p) for p in parts) <= 1.5 * min(work(p) for p in parts)


@pytest.fixture
def one_rank_group(tmp_path):
    """A process group of one (gloo): the collectives are identities, what is checked is the bookkeeping."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield _parallel.Parallel(world=1, rank=0, device="cpu", precision="no")
    dist.destroy_process_group()


def _model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)  # a weight stored out of order
    table = torch.nn.Embedding(_parallel.SPARSE_ROWS, 4)
    return table, conv, torch.nn.ModuleDict({"table": table, "conv": conv, "a": torch.nn.Linear(4, 3),
                                             "b": torch.nn.Linear(3, 2)})


def _loss(model, x, image):
    return model["b"](model["a"](model["table"](x))).sum() + model["conv"](image).square().sum()


@pytest.mark.parametrize("sparse", [False, True])
def test_bound_gradients_are_summed_in_place(one_rank_group, sparse):
    par = one_rank_group
    table, conv, model = _model()
    assert not conv.weight.is_contiguous()
    unused = torch.nn.Parameter(torch.ones(2))  # takes no part in the loss: a zero gradient, not None
    params = [*model.parameters(), unused]
    x, image = torch.tensor([[1, 5, 5, 7]]), torch.randn(1, 3, 5, 5)
    expected = torch.autograd.grad(_loss(model, x, image), list(model.parameters()))
    with _parallel.SparseTables(model) if sparse else contextlib.nullcontext() as tables:
        for _ in range(2):  # the second step reuses the buffer
            for p in params:
                p.grad = None
            par.bind_gradients(params)
            _loss(model, x, image).backward()
            if sparse:
                tables.densify()
                assert tables.touched[id(table.weight)].tolist() == [1, 5, 7]
            par.sum_gradients(params, tables.touched if sparse else None)
            for p, want in zip(model.parameters(), expected):
                torch.testing.assert_close(p.grad, want)
                assert p.grad.stride() == p.stride()  # the layout of its weight (channels-last too)
            assert torch.equal(unused.grad, torch.zeros(2))
    buffer = par._buckets.buffer.untyped_storage().data_ptr()
    in_buffer = [p for p in params if p.grad.untyped_storage().data_ptr() == buffer]
    assert {id(p) for p in in_buffer} == {id(p) for p in params if p.is_contiguous() and p is not table.weight}


def test_a_gradient_autograd_put_elsewhere_is_still_summed(one_rank_group):
    par = one_rank_group
    layer = torch.nn.Linear(4, 2)
    params = list(layer.parameters())
    par.bind_gradients(params)
    layer.weight.grad = torch.full((2, 4), 3.0)  # not the buffer's view: copied into its slice, then summed
    layer.bias.grad = None
    par.sum_gradients(params)
    assert torch.equal(layer.weight.grad, torch.full((2, 4), 3.0)) and torch.equal(layer.bias.grad, torch.zeros(2))
    assert layer.weight.grad.untyped_storage().data_ptr() == par._buckets.buffer.untyped_storage().data_ptr()


def test_adamw_is_fused_on_cpu_and_steps_as_the_loop_does():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(50, 8)), torch.nn.Parameter(torch.randn(8))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused, plain = _parallel.adamw(a, lr=1e-2, weight_decay=0.01), torch.optim.AdamW(b, lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(3):
        for p, q in zip(a, b):
            p.grad = torch.sin(p.detach() * 3)
            q.grad = torch.sin(q.detach() * 3)
        fused.step()
        plain.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_sparse_tables_give_the_dense_gradient_and_leave_tied_tables_alone():
    torch.manual_seed(0)
    table = torch.nn.Embedding(_parallel.SPARSE_ROWS, 4)
    model = torch.nn.Sequential(table, torch.nn.Linear(4, 2))
    x = torch.tensor([[1, 5, 5, 7]])  # a repeated token: its row's gradient is the sum of both uses
    expected = torch.autograd.grad(model(x).sum(), table.weight)[0]
    with _parallel.SparseTables(model) as tables:
        assert table.sparse
        model(x).sum().backward()
        assert table.weight.grad.is_sparse
        tables.densify()
        torch.testing.assert_close(table.weight.grad, expected)
        first = table.weight.grad
        table.weight.grad = None
        model(x).sum().backward()
        tables.densify()
        assert table.weight.grad.data_ptr() == first.data_ptr()  # one buffer, reused step after step
        torch.testing.assert_close(table.weight.grad, expected)
    assert not table.sparse

    class Tied(torch.nn.Module):  # a language model's output layer shares the input table
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(_parallel.SPARSE_ROWS, 4)
            self.out = torch.nn.Linear(4, _parallel.SPARSE_ROWS, bias=False)
            self.out.weight = self.table.weight

    assert _parallel.SparseTables(Tied()).modules == []
    frozen = torch.nn.Embedding(_parallel.SPARSE_ROWS, 4)
    frozen.weight.requires_grad_(False)  # LoRA's base table: adapters around it must not see sparse=True
    assert _parallel.SparseTables(frozen).modules == []


def test_adamw_is_not_fused_for_weights_stored_out_of_order():
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    assert not _parallel.adamw(conv.parameters(), lr=1e-3).defaults["fused"]


def test_a_gradient_that_arrives_after_its_bucket_left_is_summed_in_the_fix_up(one_rank_group, monkeypatch):
    par = one_rank_group
    monkeypatch.setattr(_parallel, "BUCKET", 1)  # a bucket per parameter: a bucket with nothing expected goes at once
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    params = [*a.parameters(), *b.parameters()]
    x = torch.randn(3, 4)
    for use_b in (False, True):  # step 1 leaves b out, so step 2 does not expect it: its gradient comes late
        for p in params:
            p.grad = None
        loss = (b(a(x)) if use_b else a(x)).square().sum()
        expected = torch.autograd.grad(loss, params, allow_unused=True)
        par.bind_gradients(params)
        (b(a(x)) if use_b else a(x)).square().sum().backward()
        if use_b:
            assert par._buckets.late  # the path under test ran
        par.sum_gradients(params)
        for p, want in zip(params, expected):
            torch.testing.assert_close(p.grad, torch.zeros_like(p) if want is None else want)
