"""The native serving scheduler through its Python bindings: the paged layout, a simulated
engine (paged K/V written and read back through the plan's arrays), policies and errors."""

from __future__ import annotations

import numpy as np
import pytest

import suffixspec
from suffixspec._native import BlockPool, Scheduler, TokenTree


def test_block_pool_follows_the_paged_layout() -> None:
    pool = BlockPool(8, block_size=8)
    assert pool.reserve(1, 10)
    assert pool.reserve(2, 3)
    assert pool.reserve(1, 17)
    table = pool.block_table(1)
    assert table.dtype == np.int32
    assert len(table) == 3
    slots = pool.slot_mapping(1, 5, 10)
    assert slots.dtype == np.int32
    assert slots.tolist() == [int(table[s // 8]) * 8 + s % 8 for s in range(5, 15)]
    # Not enough blocks: False and nothing changes.
    assert not pool.reserve(3, 8 * 5)
    assert (pool.num_free, len(pool.block_table(3))) == (4, 0)
    pool.truncate(1, 8)
    assert len(pool.block_table(1)) == 1
    assert pool.release(1) + pool.release(2) == 2
    assert pool.num_free == pool.num_blocks == 8
    pool.check_integrity()
    with pytest.raises(suffixspec.InvalidParameterError):
        pool.slot_mapping(2, 0, 1)
    with pytest.raises(suffixspec.InvalidParameterError, match="block_size"):
        BlockPool(8, block_size=12)
    with pytest.raises(suffixspec.DTypeError):
        pool.reserve("a", 3)
    with pytest.raises(suffixspec.InvalidParameterError):
        pool.reserve(-1, 3)


def _target(request: int, position: int) -> int:
    """The simulated model's greedy token at `position` of `request`."""
    return (request * 31 + position * 7) % 50


class _Draft:
    """A chain that follows the model for `hits` tokens, then goes wrong; plus a wrong sibling."""

    def __init__(self, request: int, start: int, hits: int, length: int) -> None:
        tokens = [_target(request, start + k) if k < hits else 99 for k in range(length)]
        self.token_ids = np.array([*tokens, 98], dtype=np.int32)
        self.parents = np.array([*range(-1, length - 1), -1], dtype=np.int32)
        self.probs = np.array([0.9**k for k in range(1, length + 1)] + [0.05])


def _run_engine(
    scheduler: Scheduler, prompts: dict[int, list[int]], new_tokens: int, abort: int | None = None
) -> tuple[dict[int, list[int]], int, int]:
    """Drives the scheduler like an engine, with a paged "K cache" of token ids: every step
    writes fed tokens at `slot_mapping`, reads each request's prefix back through
    `block_tables`, and compacts accepted tree nodes as docs/paged_kv.md says."""
    bs = scheduler.block_size
    cache = np.full((scheduler.num_blocks, bs), -1, dtype=np.int64)
    tokens = {r: list(p) for r, p in prompts.items()}
    now, steps, preempted = 0.0, 0, 0
    for r, prompt in prompts.items():
        scheduler.add_request(r, len(prompt), len(prompt) + new_tokens, now)
    while len(scheduler):
        steps += 1
        assert steps < 2000
        drafts = {}
        for r in scheduler.decode_ready():
            hits = (r + steps) % 4
            drafts[r] = _Draft(r, len(tokens[r]), hits, 5)
        plan = scheduler.schedule(now, drafts)
        preempted += len(plan.preempted)
        flat = cache.reshape(-1)
        offset, accepted = 0, []
        for b, r in enumerate(plan.request_ids.tolist()):
            ctx, chunk, q = int(plan.context_lens[b]), int(plan.chunk_lens[b]), int(plan.query_lens[b])
            lo, hi = plan.tree_offsets[b], plan.tree_offsets[b + 1]
            nodes, parents = plan.tree_nodes[lo:hi], plan.tree_parents[lo:hi]
            tree_tokens = drafts[r].token_ids[nodes].tolist() if hi > lo else []
            fed = tokens[r][ctx : ctx + chunk] + tree_tokens
            slots = plan.slot_mapping[offset : offset + q]
            offset += q
            flat[slots] = fed
            # "Attention" reads the prefix and the chunk back through the block table.
            table = plan.block_tables[b]
            positions = np.arange(ctx + chunk)
            seen = cache[table[positions // bs], positions % bs]
            assert seen.tolist() == tokens[r][: ctx + chunk], f"request {r} step {steps}"
            if not plan.emits[b]:
                accepted.append(0)
                continue
            # Greedy verification of the chosen subtree; the root is the last known token.
            path, parent = [], -1
            while True:
                want = _target(r, len(tokens[r]) + len(path))
                children = [k for k in range(len(nodes)) if parents[k] == parent]
                match = [k for k in children if drafts[r].token_ids[nodes[k]] == want]
                if not match:
                    break
                path.append(match[0])
                parent = match[0]
            # Compaction: accepted node k's K/V moves to slot ctx + chunk + k.
            for k, node_row in enumerate(path):
                src = slots[chunk + node_row]
                dst = table[(ctx + chunk + k) // bs] * bs + (ctx + chunk + k) % bs
                flat[dst] = flat[src]
            accepted.append(len(path))
            emitted = [_target(r, len(tokens[r]) + k) for k in range(len(path) + 1)]
            tokens[r].extend(emitted)
        scheduler.commit(now, plan.request_ids, accepted)
        for r in plan.request_ids.tolist():
            if r == abort and steps == 3:
                scheduler.abort(r)
            elif r in scheduler and len(tokens[r]) >= len(prompts[r]) + new_tokens:
                scheduler.finish(r)
        scheduler.check_integrity()
        now += 0.01
    return tokens, steps, preempted


def _expected(r: int, prompt: list[int], n: int) -> list[int]:
    return prompt + [_target(r, len(prompt) + k) for k in range(n)]


@pytest.mark.parametrize("policy", ["adaserve", "greedy", "uniform", "none"])
def test_simulated_engine_is_exact_with_chunks_and_preemption(policy: str) -> None:
    rng = np.random.default_rng(0)
    prompts = {r: rng.integers(0, 50, size=int(rng.integers(3, 40))).tolist() for r in range(7)}
    # A tiny pool and budget force chunked prefill and preemption.
    scheduler = Scheduler(
        num_blocks=14,
        block_size=8,
        max_tokens_per_step=24,
        max_prefill_tokens_per_step=16,
        max_running=5,
        max_verify_tokens=12,
        policy=policy,
        draft_tokens=3,
        cost_points=[(1, 0.01), (64, 0.012)],
    )
    tokens, _, preempted = _run_engine(scheduler, prompts, new_tokens=30, abort=None)
    for r, prompt in prompts.items():
        out = tokens[r][: len(prompt) + 30]
        assert out == _expected(r, prompt, 30), f"request {r}"
    assert preempted > 0
    assert scheduler.num_free_blocks == 14
    stats = scheduler.stats()
    assert (stats["finished"], stats["running"], stats["used_blocks"]) == (7, 0, 0)


def test_abort_frees_blocks_and_others_stay_exact() -> None:
    prompts = {1: [1, 2, 3, 4, 5], 2: [6, 7, 8]}
    scheduler = Scheduler(num_blocks=32, block_size=8, policy="greedy")
    tokens, _, _ = _run_engine(scheduler, prompts, new_tokens=20, abort=1)
    assert tokens[2][:23] == _expected(2, prompts[2], 20)
    assert len(tokens[1]) < 25
    assert scheduler.stats()["aborted"] == 1
    assert scheduler.num_free_blocks == 32


def test_plan_arrays_and_adaserve_priorities() -> None:
    scheduler = Scheduler(num_blocks=64, block_size=16, max_verify_tokens=6, cost_points=[(1, 0.0102)])
    scheduler.add_request(1, 8, 128, 0.0)
    scheduler.add_request(2, 8, 128, 0.0, tpot_ms=10.0)
    plan = scheduler.schedule(0.0)
    assert plan.block_tables.shape == (2, 1)
    assert plan.block_tables.dtype == np.int32
    assert plan.emits.tolist() == [True, True]
    scheduler.commit(0.0, plan.request_ids, [0, 0])
    assert scheduler.decode_ready() == [1, 2]
    tree = TokenTree([5, 6, 7, 8, 9, 10], [-1, 0, 1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    # At 30 ms request 2 owes (30 + 10.2) / 10 = 4.02 expected tokens: 5 nodes; the rest of
    # the budget (1 node) goes to the most probable remaining node.
    plan = scheduler.schedule(0.03, {1: tree, 2: tree})
    assert plan.request_ids.tolist() == [2, 1]
    assert plan.tree_lens.tolist() == [5, 1]
    assert plan.tree_offsets.tolist() == [0, 5, 6]
    assert plan.tree_parents.tolist() == [-1, 0, 1, 2, 3, -1]
    assert plan.query_lens.tolist() == [6, 2]
    assert len(plan.slot_mapping) == plan.num_tokens == 8
    with pytest.raises(suffixspec.InvalidParameterError, match="accepted must be >= 0"):
        scheduler.commit(0.04, plan.request_ids, np.array([5, -1], dtype=np.int32))
    with pytest.raises(suffixspec.InvalidParameterError, match="2 request ids but 1"):
        scheduler.commit(0.04, plan.request_ids, [5])
    scheduler.commit(0.04, plan.request_ids, np.array([5, 1], dtype=np.int64))
    assert scheduler.request_state(2)["known"] == 8 + 1 + 6
    scheduler.set_cost_model([(1, 0.01), (101, 0.02)])
    assert scheduler.step_time(51) == pytest.approx(0.015)
    assert 2 in scheduler
    assert 7 not in scheduler
    assert len(scheduler) == 2
    scheduler.set_policy("none")
    plan = scheduler.schedule(0.05, {1: tree, 2: tree})
    assert plan.tree_lens.tolist() == [0, 0]
    assert scheduler.policy == "none"


def test_errors_are_typed_and_change_nothing() -> None:
    scheduler = Scheduler(num_blocks=8, block_size=8)
    scheduler.add_request(1, 4, 16, 0.0)
    with pytest.raises(suffixspec.DuplicateRequestError):
        scheduler.add_request(1, 4, 16, 0.0)
    with pytest.raises(suffixspec.InvalidParameterError, match="max_len"):
        scheduler.add_request(2, 4, 1000, 0.0)
    with pytest.raises(suffixspec.InvalidParameterError, match="tpot_ms"):
        scheduler.add_request(2, 4, 16, 0.0, tpot_ms=0)
    with pytest.raises(suffixspec.UnknownRequestError):
        scheduler.abort(7)
    with pytest.raises(suffixspec.InvalidParameterError, match="policy"):
        Scheduler(num_blocks=8, policy="fastest")
    with pytest.raises(suffixspec.DTypeError):
        Scheduler(num_blocks=8, cost_points="fast")
    plan = scheduler.schedule(0.0)
    with pytest.raises(suffixspec.InvalidParameterError, match="not committed"):
        scheduler.schedule(0.0)
    with pytest.raises(suffixspec.InvalidParameterError):
        scheduler.commit(0.0, [1], [1])  # no tree was planned
    assert scheduler.request_state(1)["known"] == 4
    scheduler.commit(0.0, plan.request_ids, [0])
    bad = TokenTree([1, 2], [-1, 0], [0.5, 0.5])
    with pytest.raises(suffixspec.UnknownRequestError):
        scheduler.schedule(0.1, {9: bad})
    with pytest.raises(suffixspec.DTypeError, match="no parents"):
        scheduler.schedule(0.1, {1: object()})
    with pytest.raises(suffixspec.DTypeError):
        scheduler.schedule(0.1, [bad])

    class Broken:
        parents = np.array([-1, 3], dtype=np.int32)
        probs = np.array([0.5, 0.5])

    with pytest.raises(suffixspec.InvalidTreeError):
        scheduler.schedule(0.1, {1: Broken()})
    assert not scheduler.step_in_flight
    assert scheduler.schedule(0.1, {1: bad}).tree_lens.tolist() == [2]
