"""The speculative decoding loop: prefill, then propose -> verify one tree block -> accept -> compact."""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np
import torch

from suffixspec._native import TokenTree, build_tree_batch
from suffixspec.errors import InvalidParameterError
from suffixspec.generation.attention import AttentionBackend
from suffixspec.generation.batch import Request, left_pad
from suffixspec.generation.compat import ModelInfo
from suffixspec.generation.config import DecodeConfig, SpecConfig
from suffixspec.generation.kv_cache import TreeKVCache
from suffixspec.generation.logits import TargetScorer
from suffixspec.generation.masks import block_mask
from suffixspec.generation.stats import BatchStats
from suffixspec.generation.streaming import StreamSink
from suffixspec.generation.verify import accept_greedy, accept_sampling, sample_tokens
from suffixspec.proposer import Proposer, empty_tree, verifiable_trees

_NO_NODES = np.zeros(0, dtype=np.int64)


class AcceptanceRequest(Protocol):
    """What an :class:`AcceptancePolicy` sees of a request (the loop's `Request` and the engine's
    requests both have it): its id, prompt length and tokens so far (prompt + output)."""

    @property
    def req_id(self) -> Hashable: ...
    @property
    def prompt_len(self) -> int: ...
    @property
    def length(self) -> int: ...


class AcceptancePolicy(Protocol):
    """The public seam for trace-forced benchmarks (greedy decoding only), taken by this loop and
    by :class:`suffixspec.Engine` (``acceptance=``).

    Called with the requests of a forward pass, their draft trees (empty ones for the prefill and
    plain steps) and the model's argmax of every block row `[B, n]` (row 0: after the root, row
    i + 1: after node i); returns the `[B, n]` tokens that acceptance uses instead. A benchmark over
    random-weight models forces the acceptance of a recorded trace with it, so that the loop does
    exactly the work it would do on the real model. The default (None) is plain greedy acceptance.
    """

    def __call__(
        self, requests: Sequence[AcceptanceRequest], trees: Sequence[TokenTree], targets: np.ndarray
    ) -> np.ndarray: ...


class SpeculativeLoop:
    """Runs one batch of requests to completion. Build it, then call :meth:`run` once."""

    def __init__(
        self,
        model: Any,
        info: ModelInfo,
        decode: DecodeConfig,
        spec: SpecConfig,
        scorer: TargetScorer,
        proposer: Proposer,
        backend: AttentionBackend,
        generator: torch.Generator | None = None,
        sink: StreamSink | None = None,
        acceptance: AcceptancePolicy | None = None,
        sync_phases: bool = False,
    ):
        """`sync_phases`: synchronize the device after each timed phase (`BatchStats.phases`), so
        that GPU work counts in the phase that queued it (benchmarks; it costs a sync per phase)."""
        if acceptance is not None and decode.do_sample:
            raise InvalidParameterError("an acceptance policy replaces greedy choices; sampling has none")
        self.model = model
        self.info = info
        self.decode = decode
        self.spec = spec
        self.scorer = scorer
        self.proposer = proposer
        self.backend = backend
        self.generator = generator
        self.sink = sink
        self.acceptance = acceptance
        self.sync_phases = sync_phases
        self.device = info.device
        self.batch = BatchStats()
        self._open: dict[Any, Request] = {}  # requests started in the proposer, not yet finished

    # -- token choice ---------------------------------------------------------------------------
    def _next_tokens(self, logits: torch.Tensor) -> np.ndarray:
        """The token after each row of `logits` `[B, V]`, chosen as plain decoding chooses it."""
        if self.decode.do_sample:
            return sample_tokens(self.scorer.probs(logits), self.generator)
        return self.scorer.greedy(logits).cpu().numpy()

    def _override(self, requests: Sequence[Request], trees: Sequence[TokenTree], targets: np.ndarray):
        """`targets` `[B, n]`, or what the acceptance policy puts in their place."""
        if self.acceptance is None:
            return targets
        return np.asarray(self.acceptance(requests, trees, targets), dtype=np.int64)

    def _phase(self, name: str) -> AbstractContextManager[None]:
        """Times the block into `BatchStats.phases[name]` (synchronized with `sync_phases`)."""
        sync = self.sync_phases and self.device.type == "cuda"
        return self.batch.timed(name, (lambda: torch.cuda.synchronize(self.device)) if sync else None)

    def _forward(self, phase: str, **inputs: Any) -> Any:
        """The model's forward pass, timed to completion into `forward_time_s` and `phases[phase]`."""
        t0 = time.perf_counter()
        out = self.model(**inputs)
        if self.device.type == "cuda":  # timed to completion; acceptance syncs right after anyway
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        self.batch.forward_time_s += elapsed
        self.batch.add_phase(phase, elapsed)
        return out

    # -- phases ---------------------------------------------------------------------------------
    def _prefill(self, requests: list[Request]) -> TreeKVCache:
        # Padding is masked out; an in-vocabulary filler keeps the embedding lookup valid.
        filler = self.decode.pad_token_id if self.decode.pad_token_id < self.info.vocab_size else 0
        ids, mask = left_pad([r.context for r in requests], filler)
        ids_t = torch.from_numpy(ids).to(self.device)
        mask_t = torch.from_numpy(mask).to(self.device)
        # Positions as `model.generate` derives them from a padded mask.
        positions = (mask_t.cumsum(-1) - 1).masked_fill_(mask_t == 0, 1)
        kv = TreeKVCache(mask_t.bool(), positions)
        extra = {"logits_to_keep": 1} if self.info.supports_logits_to_keep else {}
        out = self._forward(
            "prefill_forward",
            input_ids=ids_t,
            attention_mask=mask_t,
            position_ids=positions,
            use_cache=True,
            **{self.info.cache_kwarg: kv.cache},
            **extra,
        )
        first = self._next_tokens(out.logits[:, -1])
        first = self._override(requests, [empty_tree()] * len(requests), first[:, None])[:, 0]
        for r, tok in zip(requests, first, strict=True):
            self._emit(r, np.asarray([tok], dtype=np.int32))
        return kv

    def _emit(self, r: Request, tokens: np.ndarray) -> None:
        kept = r.emit(tokens, self.decode.eos_token_ids)
        if kept.size:
            self.proposer.extend(r.req_id, kept)
            if self.sink is not None:
                self.sink.tokens(kept)

    def _block(self, requests: Sequence[Request], trees: list) -> tuple[torch.Tensor, ...]:
        """Token ids, positions and tree mask of the verification block, on the device."""
        roots = [r.last_token for r in requests]
        prefix = [r.length - 1 for r in requests]
        if any(len(t) for t in trees):
            tok, pos, mask, _ = build_tree_batch(trees, prefix, roots)
            tok_pos = torch.from_numpy(np.stack([tok, pos])).to(self.device, non_blocking=True)
            tree_mask = torch.from_numpy(mask).to(self.device, non_blocking=True)
        else:  # no draft anywhere: a plain decode step
            tok_pos = torch.tensor([roots, prefix], dtype=torch.long)[:, :, None].to(self.device)
            tree_mask = torch.ones((len(requests), 1, 1), dtype=torch.bool, device=self.device)
        return tok_pos[0], tok_pos[1], tree_mask

    def _verify(self, kv: TreeKVCache, requests: Sequence[Request], trees: list) -> list:
        with self._phase("tree"):
            tokens, positions, tree_mask = self._block(requests, trees)
        if tokens.shape[1] == 1 and kv.all_valid and self.info.sliding_window is None:
            # A plain decode step over a gap-free cache: no mask, as in plain decoding, so that
            # sdpa keeps its fast GQA path instead of expanding the KV heads for a mask.
            mask = None
        else:
            mask = block_mask(kv.valid, kv.positions, tree_mask, positions, self.info)
        out = self._forward(
            "forward",
            input_ids=tokens,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            **{self.info.cache_kwarg: kv.cache},
            **self.backend.forward_kwargs(tree_mask, kv.valid),
        )
        self.batch.forward_passes += 1
        if tokens.shape[1] == 1:  # no drafts: choose the next token as plain decoding does
            plain = self._override(requests, trees, self._next_tokens(out.logits[:, 0])[:, None])
            results = [(_NO_NODES, int(t)) for t in plain[:, 0]]
        elif self.decode.do_sample:
            results = accept_sampling(trees, self.scorer.probs(out.logits), self.generator)
        else:
            targets = self._override(requests, trees, self.scorer.greedy(out.logits).cpu().numpy())
            results = accept_greedy(trees, targets)
        del out
        counts = np.asarray([1 + len(nodes) for nodes, _ in results], dtype=np.int64)
        keep = np.tile(np.arange(counts.max(), dtype=np.int64), (len(results), 1))
        for b, (nodes, _) in enumerate(results):
            keep[b, 1 : counts[b]] = nodes + 1
        with self._phase("compact"):
            kv.keep_block(keep, counts, positions)
        return results

    def run(self, requests: list[Request]) -> None:
        """Generates for every request in place (their `tokens`, `length` and `stats`)."""
        start = time.perf_counter()
        try:
            for r in requests:
                self.proposer.start(r.req_id, r.context)
                self._open[r.req_id] = r
            if self.sink is not None:
                self.sink.prompt(requests[0].context)
            with self.backend.active():
                self._decode(requests)
        except BaseException:
            self._abort(requests)
            raise
        finally:
            if self.sink is not None:
                self.sink.end()
        self.batch.total_time_s = time.perf_counter() - start
        self.batch.new_tokens = sum(r.stats.new_tokens for r in requests)

    def _decode(self, requests: list[Request]) -> None:
        t0 = time.perf_counter()
        max_time = self.decode.max_time
        deadline = None if max_time is None else t0 + max_time
        kv = self._prefill(requests)
        prefill = time.perf_counter() - t0
        self.batch.forward_passes += 1
        self.batch.prefill_time_s = prefill
        for r in requests:
            r.stats.prefill_time_s = prefill
        active = self._retire(kv, list(requests))
        while active:
            if deadline is not None and time.perf_counter() >= deadline:
                # `max_time`: stop at this step boundary; every output is a prefix of plain output.
                for r in active:
                    r.done, r.stats.finish_reason = True, "time"
                    self._finish(r.req_id)
                return
            active = self._step(kv, active)

    def _step(self, kv: TreeKVCache, active: list[Request]) -> list[Request]:
        t0 = time.perf_counter()
        # A step emits at most depth + 1 tokens: deeper nodes than `remaining - 1` are useless.
        depths = [r.remaining - 1 for r in active]
        budgets = [self.spec.node_budget if d > 0 else 0 for d in depths]
        trees = self.proposer.propose(
            [r.req_id for r in active], [r.context for r in active], budgets, depths
        )
        trees = verifiable_trees(trees, [r.req_id for r in active], budgets, depths, self.info.vocab_size)
        t1 = time.perf_counter()
        results = self._verify(kv, active, trees)
        t2 = time.perf_counter()
        for r, tree, (nodes, bonus) in zip(active, trees, results, strict=True):
            emitted = np.append(np.asarray(tree.token_ids)[nodes], bonus).astype(np.int32)
            self._emit(r, emitted)
            stats = r.stats
            stats.steps += 1
            stats.draft_sizes.append(len(tree))
            stats.accepted_per_step.append(len(nodes))
        t3 = time.perf_counter()
        propose, verify = (t1 - t0) + (t3 - t2), t2 - t1
        self.batch.propose_time_s += propose
        self.batch.verify_time_s += verify
        for r in active:
            r.stats.propose_time_s += propose
            r.stats.verify_time_s += verify
        return self._retire(kv, active)

    def _abort(self, requests: list[Request]) -> None:
        """A failed call: the proposer undoes it where it can (a failed `generate` leaves the
        cache as it was), else the open requests are finished with what they generated."""
        abort = getattr(self.proposer, "abort", None)
        if callable(abort):
            self._open.clear()
            abort([r.req_id for r in requests])
        else:
            for req_id in list(self._open):
                self._finish(req_id)

    def _finish(self, req_id: Any) -> None:
        del self._open[req_id]
        self.proposer.finish(req_id)

    def _retire(self, kv: TreeKVCache, active: list[Request]) -> list[Request]:
        """Finished requests leave the batch (and enter the proposer's cache)."""
        if all(not r.done for r in active):
            kv.maybe_defragment()
            return active
        for r in active:
            if r.done:
                self._finish(r.req_id)
        rows = np.asarray([i for i, r in enumerate(active) if not r.done], dtype=np.int64)
        if rows.size:
            kv.select_rows(rows)
            kv.maybe_defragment()
        return [active[i] for i in rows]
