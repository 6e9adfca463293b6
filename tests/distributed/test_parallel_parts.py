"""The pieces that make data-parallel steps cheap, each checked against the plain way: length groups planned by
cost, a batch split so ranks finish together, rows of a gradient table found non-zero, gradients summed in place
from one flat buffer, fused AdamW."""

from __future__ import annotations

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


@pytest.mark.parametrize("world", [2, 3])
def test_shard_gives_every_row_to_one_rank_and_balances_the_work(world):
    lengths = [58, 60, 57, 8, 9, 10, 12, 9, 11, 10, 9, 8, 12, 11, 10, 9]  # the long texts first: contiguous
    idx = np.arange(16)[::-1]                                               # slices put them on one rank
    inputs = _inputs(lengths)
    parts = [inputs.shard(idx, r, world) for r in range(world)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(16))
    assert [inputs.shard(idx, r, world).tolist() for r in range(world)] == [p.tolist() for p in parts]  # same split

    def work(rows):
        return planned_cost([lengths[i] for i in rows])

    assert max(work(p) for p in parts) < max(work(p) for p in np.array_split(idx, world))
    assert max(work(p) for p in parts) <= 1.5 * min(work(p) for p in parts)


def test_nonzero_rows_finds_every_row_with_anything_in_it():
    grad = torch.zeros(5000, 16)
    grad[torch.tensor([3, 70, 4999])] = torch.randn(3, 16)
    grad[10, 5] = 1e-38  # tiny entries count
    grad[11, 0], grad[11, 1] = 1.0, -1.0  # entries that cancel in a plain sum
    found = _parallel._nonzero_rows(grad)
    assert torch.equal(found, (grad != 0).any(dim=1))
    assert found.sum() == 5


def test_bound_gradients_are_summed_in_place(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(_parallel.SPARSE_ROWS, 4), torch.nn.Linear(4, 3),
                                    torch.nn.Linear(3, 2))
        unused = torch.nn.Parameter(torch.ones(2))  # takes no part in the loss: a zero gradient, not None
        params = [*model.parameters(), unused]
        x = torch.tensor([[1, 5, 7]])
        par = _parallel.Parallel(world=1, rank=0, device="cpu", precision="no")
        expected = torch.autograd.grad(model(x).sum(), list(model.parameters()))
        par.bind_gradients(params)
        model(x).sum().backward()
        par.sum_gradients(params)
        for p, want in zip(model.parameters(), expected):
            torch.testing.assert_close(p.grad, want)
        assert torch.equal(unused.grad, torch.zeros(2))
        buffer = par._buffer.untyped_storage().data_ptr()
        assert all(p.grad.untyped_storage().data_ptr() == buffer for p in params[1:])  # no copies made
        assert params[0].grad.untyped_storage().data_ptr() != buffer  # the table keeps its own, sent by rows
    finally:
        dist.destroy_process_group()


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
