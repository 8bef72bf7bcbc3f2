"""``suffixspec.Engine``: continuous batching with tree speculation over a paged KV cache.

Each :meth:`Engine.step` drafts a tree for every decoding request from the suffix cache, lets the
Rust :class:`~suffixspec._native.Scheduler` plan the step (admission, chunked prefill, preemption
by recompute, per-request tree budgets), runs the model **once** on the plan's flat tokens with
explicit positions through paged attention, verifies each emitting row exactly as the generation
loop does (``suffixspec.generation.verify``), compacts the accepted K/V in place and commits.
A stage that fails ends only the requests it concerns (:meth:`Engine.step` says which).
A running request absent from the plan (the budgets ran out, or it sits the step out under
``"adaserve"``) is simply not fed: its tokens and K/V stay as they are until a later step.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch

from suffixspec._native import Scheduler, TokenTree
from suffixspec.cache import SuffixCache
from suffixspec.config import SpecConfig, check_real
from suffixspec.engine.architectures import (
    PAGED_ARCHITECTURES,
    attention_backend,
    check_layers_ran,
    check_model,
)
from suffixspec.engine.paged_attention import PAGED_KWARG, PagedBatch, paged_attention_active, paged_batch
from suffixspec.engine.paged_cache import PagedKVCache, step_meta
from suffixspec.engine.params import RequestOutput, RequestParams
from suffixspec.engine.request import EngineRequest
from suffixspec.engine.step_cost import MeasuredStepCost
from suffixspec.errors import (
    DuplicateRequestError,
    InvalidParameterError,
    InvalidTokenError,
    RequestFailedError,
    UnknownRequestError,
)
from suffixspec.generation.compat import prepare_generation_config
from suffixspec.generation.logits import TargetScorer, build_processors
from suffixspec.generation.loop import AcceptancePolicy
from suffixspec.generation.stats import BatchStats
from suffixspec.generation.streaming import StreamSink
from suffixspec.generation.verify import accept_greedy, accept_sampling
from suffixspec.proposer import Proposer, SuffixProposer, proposed_trees, verifiable_tree

__all__ = ["PAGED_ARCHITECTURES", "Engine"]

logger = logging.getLogger(__name__)


def _eos_ids(model: Any) -> tuple[int, ...]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))


def _depths(parents: np.ndarray) -> np.ndarray:
    """Depth of each node (1 = child of the root); parents come before children."""
    depth = np.zeros(len(parents), dtype=np.int64)
    for i, p in enumerate(parents.tolist()):
        depth[i] = 1 if p < 0 else depth[p] + 1
    return depth


class Engine:
    """Serves many requests at once with lossless speculative decoding.

    Args:
        model: a transformers causal LM of :data:`PAGED_ARCHITECTURES` (sdpa or eager attention;
            ``engine/architectures.py`` says which configurations are refused and why).
        tokenizer: turns text prompts into ids and outputs into text (optional).
        spec: drafting settings (the same :class:`SpecConfig` as ``suffixspec.generate``).
        cache: the suffix cache to draft from and to feed finished responses into (default: a
            new one sized by ``spec``).
        proposer: drafts from elsewhere than ``cache`` (any :class:`suffixspec.proposer.Proposer`).
        num_blocks, block_size: the paged KV pool (``docs/paged_kv.md``).
        policy: the tree selection: ``"adaserve"`` (SLO-customized), ``"greedy"``,
            ``"uniform"`` (``draft_tokens`` per request) or ``"none"`` (no speculation).
        sit_out_margin: ``"adaserve"`` only: while some SLO request is behind its TPOT pace, an
            SLO request this many steps' worth of its target ahead of its pace, with a target of
            at least ``sit_out_min_target_steps`` steps (default 2.0), sits the step out (not
            fed, KV kept; ``ServingStats.sit_outs``), which makes the step cheaper where its
            cost grows with its requests (the rule: ``rust/scheduler/README.md``). Default
            ``math.inf``: never, since in ``benches/bench_serve.py`` (1.0 measured) they did not
            pay. The baselines feed every running request every step.
        max_tokens_per_step, max_prefill_tokens_per_step, max_running, max_verify_tokens,
        draft_tokens, cost_points: the scheduler's budgets and step-cost model (see
            :class:`suffixspec._native.Scheduler`). Without ``cost_points`` the engine times its
            own steps and refits the model every few dozen steps (:attr:`step_cost`).
        acceptance: the generation loop's :class:`~suffixspec.generation.loop.AcceptancePolicy`
            (trace-forced benchmarks): it replaces the model's greedy choices in verification;
            greedy requests only. None (the default): exact greedy acceptance.
        clock: seconds, the time the scheduler plans with (SLO deadlines, TTFT/TPOT) and that
            per-request stats record (default ``time.monotonic``; benchmarks pass a virtual
            clock). Settable later as ``engine.clock``.
        attention: ``"auto"`` (the CUDA tree-attention kernel's paged mode where it can run for
            the model: CUDA, fp16/bf16, a supported head dim; else its torch reference),
            ``"cuda"`` (the kernel; :class:`KernelUnavailableError` with the reason where it
            cannot run) or ``"torch"`` (the reference, any device), chosen as
            ``suffixspec.generate``'s ``attention=``. The choice is :attr:`attention_backend`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        spec: SpecConfig | None = None,
        cache: SuffixCache | None = None,
        proposer: Proposer | None = None,
        num_blocks: int = 1024,
        block_size: int = 16,
        policy: str = "adaserve",
        max_tokens_per_step: int | None = None,
        max_prefill_tokens_per_step: int | None = None,
        max_running: int | None = None,
        max_verify_tokens: int | None = None,
        draft_tokens: int | None = None,
        cost_points: Sequence[tuple[int, float]] | None = None,
        sit_out_margin: float | None = None,
        sit_out_min_target_steps: float | None = None,
        acceptance: AcceptancePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        attention: str = "auto",
    ):
        self.clock = clock
        self.info = check_model(model)
        #: ``"cuda"`` or ``"torch"``: which implementation of the paged contract every step runs.
        self.attention_backend = attention_backend(model, attention)
        spec = SpecConfig() if spec is None else spec
        if not isinstance(spec, SpecConfig):
            raise InvalidParameterError(f"spec must be a SpecConfig, got {type(spec).__name__}")
        if not isinstance(policy, str):  # (the native constructor would raise a bare TypeError)
            raise InvalidParameterError(f"policy must be a string, got {type(policy).__name__}")
        self.scheduler = Scheduler(
            num_blocks=num_blocks,
            block_size=block_size,
            max_tokens_per_step=max_tokens_per_step,
            max_prefill_tokens_per_step=max_prefill_tokens_per_step,
            max_running=max_running,
            max_verify_tokens=max_verify_tokens,
            policy=policy,
            draft_tokens=draft_tokens,
            cost_points=cost_points,
            sit_out_margin=sit_out_margin,
            sit_out_min_target_steps=sit_out_min_target_steps,
        )
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.acceptance = acceptance
        self.cache = SuffixCache(**spec.cache_kwargs()) if cache is None else cache
        if proposer is not None and not isinstance(proposer, Proposer):
            raise InvalidParameterError(f"proposer must implement Proposer, got {type(proposer).__name__}")
        self.proposer = (
            SuffixProposer(self.cache, spec, self.info.vocab_size) if proposer is None else proposer
        )
        # The pool as the scheduler resolved it (block_size=None is its default size).
        self.kv = PagedKVCache.for_model(model, self.scheduler.num_blocks, self.scheduler.block_size)
        self._eos = _eos_ids(model)
        self._requests: dict[Hashable, EngineRequest] = {}
        self._by_handle: dict[int, EngineRequest] = {}
        self._handles = itertools.count()
        self._auto_ids = itertools.count()
        #: The outputs of the requests that the last :meth:`step` ended with ``"error"`` (also
        #: among its return value; empty after a step where nothing failed).
        self.failed_outputs: list[RequestOutput] = []
        #: Without ``cost_points`` the engine measures its own steps and refits the scheduler's
        #: step-cost model from them (``engine/step_cost.py``); supplied points stay fixed.
        self.step_cost = MeasuredStepCost() if cost_points is None else None
        #: Figures of every step since the engine was built, in ``suffixspec.generate``'s type:
        #: wall seconds per phase (``phases``; names in ``docs/decoding_loops.md``), forward
        #: passes, emitted tokens. Assign a fresh ``BatchStats()`` to measure a span of steps.
        self.step_stats = BatchStats()

    # -- requests -----------------------------------------------------------------------------
    def _prompt_ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidParameterError("a text prompt needs the engine's tokenizer")
            prompt = self.tokenizer(prompt)["input_ids"]
        if isinstance(prompt, torch.Tensor | np.ndarray):
            prompt = prompt.tolist()
        if not isinstance(prompt, Sequence) or isinstance(prompt, bytes):
            raise InvalidParameterError(
                f"a prompt is text or a sequence of token ids, got {type(prompt).__name__}"
            )
        if len(prompt) == 0:
            raise InvalidParameterError("the prompt is empty")
        ids = []
        for tok in prompt:
            if isinstance(tok, bool) or not isinstance(tok, int | np.integer):
                raise InvalidTokenError(f"prompt token ids must be integers, got {tok!r}")
            if not 0 <= int(tok) < self.info.vocab_size:
                raise InvalidTokenError(f"prompt token id {int(tok)} is outside [0, {self.info.vocab_size})")
            ids.append(int(tok))
        return ids

    def add_request(self, request_id: Hashable, prompt: Any, params: RequestParams | None = None) -> None:
        """Queues a request (``prompt``: text or token ids). Bad input raises a typed
        :class:`SuffixSpecError` and changes nothing; so does a proposer whose ``start`` fails
        (:class:`RequestFailedError`, the proposer's exception chained)."""
        params = RequestParams() if params is None else params
        if not isinstance(params, RequestParams):
            raise InvalidParameterError(f"params must be a RequestParams, got {type(params).__name__}")
        if self.acceptance is not None and params.do_sample:
            raise InvalidParameterError("an acceptance policy replaces greedy choices; sampling has none")
        if params.stop and self.tokenizer is None:  # they would be ignored without a word
            raise InvalidParameterError("stop strings need the engine's tokenizer (Engine(model, tokenizer))")
        try:
            hash(request_id)
        except TypeError:
            raise InvalidParameterError(
                f"request ids must be hashable, got {type(request_id).__name__}"
            ) from None
        if request_id in self._requests:
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        ids = self._prompt_ids(prompt)
        limit = self.info.max_positions
        if limit is not None and len(ids) + params.max_new_tokens > limit:
            raise InvalidParameterError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the "
                f"model's {limit} positions"
            )
        config = prepare_generation_config(
            self.model, None, max_new_tokens=params.max_new_tokens, **params.sampling_overrides()
        )
        scorer = TargetScorer(build_processors(self.model, config, len(ids)))
        generator = None
        if params.do_sample and params.seed is not None:
            generator = torch.Generator(device=self.info.device).manual_seed(params.seed)
        stops = self._eos if params.stop_token_ids is None else tuple(params.stop_token_ids)
        handle = next(self._handles)
        slo = params.slo
        now = self.clock()
        self.scheduler.add_request(  # validates against the pool before anything changes
            handle,
            len(ids),
            len(ids) + params.max_new_tokens,
            now,
            priority=params.priority,
            tpot_ms=None if slo is None else slo.tpot_ms,
            ttft_ms=None if slo is None else slo.ttft_ms,
        )
        request = EngineRequest(request_id, handle, ids, params, scorer, stops, generator, tokens=list(ids))
        request.stats.arrival_time = now
        if params.max_time is not None:
            request.deadline = now + params.max_time
        self._requests[request_id] = request
        self._by_handle[handle] = request
        try:
            self.proposer.start(request_id, np.asarray(ids, dtype=np.int32))
        except Exception as exc:
            # Not the caller's input: the proposer failed. The request leaves again (and the
            # proposer drops whatever its start did), so the failed call changes nothing.
            error = RequestFailedError(request_id, "proposer.start", exc)
            self._end(request, "error")
            raise error from exc

    def abort(self, request_id: Hashable) -> RequestOutput:
        """Ends a request now: its KV blocks are freed and its partial output is not cached.
        Returns its last output (``finish_reason`` ``"abort"``)."""
        request = self._requests.get(request_id)
        if request is None:
            raise UnknownRequestError(f"no running request {request_id!r}")
        return self._end(request, "abort")

    def _end(
        self, request: EngineRequest, reason: str, error: RequestFailedError | None = None
    ) -> RequestOutput:
        """Ends a request before it finished (abort, failed stage): frees its KV blocks, keeps
        its partial output out of the suffix cache, and returns its last output."""
        self.scheduler.abort(request.handle)
        request.finished, request.finish_reason, request.error = True, reason, error
        request.stats.finish_time = self.clock()
        self._forget(request)
        try:
            undo = getattr(self.proposer, "abort", None)
            if callable(undo):
                undo([request.request_id])
            else:
                self.proposer.finish(request.request_id)
        except Exception:  # the request has ended either way: only the proposer's state is off
            logger.exception("the proposer failed to drop request %r", request.request_id)
        return request.take_output()

    def _fail(self, handles: Sequence[int], stage: str, cause: Exception) -> None:
        """Ends the requests ``handles`` (those still live) with ``"error"`` because ``stage``
        raised ``cause``; logs the failure once (call it in the ``except`` block) and adds their
        outputs to :attr:`failed_outputs`."""
        ended = [self._by_handle[h] for h in handles if h in self._by_handle]
        logger.exception(
            "%s failed; %d request(s) end with 'error': %s",
            stage,
            len(ended),
            ", ".join(repr(r.request_id) for r in ended),
        )
        for r in ended:
            error = RequestFailedError(r.request_id, stage, cause)
            self.failed_outputs.append(self._end(r, "error", error))

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def __contains__(self, request_id: object) -> bool:
        """Whether ``request_id`` is queued or running."""
        try:
            return request_id in self._requests
        except TypeError:  # unhashable
            return False

    def _forget(self, request: EngineRequest) -> None:
        del self._requests[request.request_id]
        del self._by_handle[request.handle]

    # -- one step -----------------------------------------------------------------------------
    def _drafts(self, decode_ready: list[int]) -> dict[int, TokenTree]:
        if self.scheduler.policy == "none" or not decode_ready:
            return {}
        start = time.perf_counter()
        drafts = self._propose([self._by_handle[h] for h in decode_ready])
        elapsed = time.perf_counter() - start
        self.step_stats.add_phase("propose", elapsed)
        self.step_stats.propose_time_s += elapsed
        return drafts

    def _propose(self, ready: list[EngineRequest]) -> dict[int, TokenTree]:
        """One draft tree per decoding request (a failure ends the requests it concerns)."""
        depths = [r.remaining - 1 for r in ready]
        budgets = [self.spec.node_budget if d > 0 else 0 for d in depths]
        contexts = [np.asarray(r.tokens, dtype=np.int32) for r in ready]
        req_ids = [r.request_id for r in ready]
        try:  # one call for the batch: its failure (or a malformed answer) ends the batch
            trees = proposed_trees(self.proposer.propose(req_ids, contexts, budgets, depths), req_ids)
        except Exception as exc:
            self._fail([r.handle for r in ready], "proposer.propose", exc)
            return {}
        drafts = {}
        for r, tree, budget, depth in zip(ready, trees, budgets, depths, strict=True):
            try:  # one request's bad tree ends that request
                tree = verifiable_tree(tree, r.request_id, budget, depth, self.info.vocab_size)
            except Exception as exc:
                self._fail([r.handle], "draft check", exc)
                continue
            if len(tree):
                drafts[r.handle] = tree
        return drafts

    def step(self) -> list[RequestOutput]:
        """Runs one model forward pass for the scheduled requests; returns the output of every
        request that gained tokens or ended in it.

        **Failures.** A stage that raises ends the requests it concerns with ``finish_reason``
        ``"error"``: their KV blocks are freed, the proposer drops them (their partial output
        never feeds the suffix cache), their outputs carry a :class:`RequestFailedError` (stage
        named, the exception chained) in ``error``, are returned with the others and listed in
        :attr:`failed_outputs`, and the failure is logged once. Nothing else changes: the other
        requests go on with exactly the tokens they would have produced, and new requests are
        served. The exception does not leave ``step()``. By stage:

        - one request's: its draft tree (``"draft check"``: not a :class:`TokenTree`, ids
          outside the vocabulary), its verification (``"verification"``: logits processing,
          an acceptance policy, acceptance), ``"proposer.extend"`` with its new tokens,
          ``"detokenization"`` (decoding, stop strings) and ``"proposer.finish"`` end that
          request; its tokens of a step that failed before commit are not emitted;
        - the whole step's: ``"proposer.propose"`` (or a malformed answer) ends the requests
          it drafted for; the ``"forward pass"`` (building its batch included) and the
          ``"step commit"`` (K/V compaction, the scheduler's commit) end the requests of the
          step, with nothing of the step emitted; ``"scheduling"`` ends every request the
          scheduler holds (any could have been in its plan). A failed refit of the measured
          step-cost model only logs, keeping the previous model.

        ``add_request`` reports a failed ``proposer.start`` by raising (nothing changes).

        **Deadlines.** At the end of the step, every request still unfinished whose deadline has
        passed (``RequestParams.max_time``, ``generate(max_time=)``) ends with ``"time"``."""
        self.failed_outputs = []
        started = time.perf_counter()  # the step's real cost, whatever clock the engine plans with
        try:
            return self._run_step(started)
        finally:
            self.step_stats.total_time_s += time.perf_counter() - started

    def _run_step(self, started: float) -> list[RequestOutput]:
        decode_ready = self.scheduler.decode_ready()  # rows of these verify; the others prefill
        drafts = self._drafts(decode_ready)
        try:
            with self.step_stats.timed("schedule"):
                plan = self.scheduler.schedule(self.clock(), drafts)
        except Exception as exc:
            self._fail(list(self._by_handle), "scheduling", exc)
            return self._step_end([], self.clock())
        for handle in plan.preempted:
            self._by_handle[handle].stats.preemptions += 1
        for handle in plan.sat_out:  # running, K/V kept: nothing to feed, verify or commit
            self._by_handle[handle].stats.sit_outs += 1
        handles = plan.request_ids.tolist()
        if not handles:
            with self.step_stats.timed("schedule"):
                self.scheduler.commit(self.clock(), [], [])
            return self._step_end([], self.clock())
        # A step that verifies for some row is a verification step, else a prefill step (as
        # generate's prefill pass); chunks of other prompts may share a verification step.
        verifies = not set(decode_ready).isdisjoint(handles)
        model_start = time.perf_counter()
        try:
            logits, trees, num_tokens = self._forward(
                plan, handles, drafts, "forward" if verifies else "prefill_forward"
            )
        except Exception as exc:  # nothing of the step was committed: ending its requests
            self._fail(handles, "forward pass", exc)  # releases the scheduler's step
            return self._step_end([], self.clock())
        marks = {h: self._by_handle[h].mark() for h in handles}
        with self.step_stats.timed("verify"):
            accepted, moves = self._verify(plan, handles, trees, logits, marks)
        model_side = time.perf_counter() - model_start  # inputs, forward, acceptance
        live = [h for h in handles if h in self._by_handle]  # the rows whose verification failed left
        try:
            if moves:
                compact_start = time.perf_counter()
                device = self.info.device
                src, dst = (
                    torch.tensor(x, dtype=torch.long, device=device) for x in zip(*moves, strict=True)
                )
                self.kv.move(src, dst)
                compacted = time.perf_counter() - compact_start
                self.step_stats.add_phase("compact", compacted)
                model_side += compacted
            now = self.clock()
            with self.step_stats.timed("schedule"):
                self.scheduler.commit(now, live, [accepted[h] for h in live])
        except Exception as exc:
            for h in live:
                self._by_handle[h].undo_emit(marks[h])
            self._fail(live, "step commit", exc)
            return self._step_end([], self.clock())
        self._refit_step_cost(num_tokens, time.perf_counter() - started)
        stats = self.step_stats
        if verifies:
            stats.verify_time_s += model_side
        else:
            stats.prefill_time_s += model_side
        with self.step_stats.timed("output"):
            outputs = self._outputs(plan, handles, now)
        # Counted from what the step returns: a stop string may have cut a row's tokens.
        stats.new_tokens += sum(len(o.new_token_ids) for o in outputs)
        return self._step_end(outputs, now)

    def _step_end(self, outputs: list[RequestOutput], now: float) -> list[RequestOutput]:
        """What a step returns: the outputs of the requests that failed in it, then ``outputs``,
        then those of the requests whose deadline had passed by ``now`` (checked at every step's
        end, a failed one's too)."""
        with self.step_stats.timed("output"):
            outputs.extend(self._expire(now))
        return [*self.failed_outputs, *outputs]

    def _outputs(self, plan: Any, handles: list[int], now: float) -> list[RequestOutput]:
        """The outputs of the step's emitting rows; the finished (a stop, the length, or the
        deadline passed) leave, their responses fed to the suffix cache."""
        outputs = []
        for b, handle in enumerate(handles):
            r = self._by_handle.get(handle)
            if r is None or not plan.emits[b]:
                continue
            stage = "detokenization"
            try:
                r.update_text(self.tokenizer)
                if r.past_deadline(now):
                    r.finished, r.finish_reason = True, "time"
                if r.finished:
                    stage = "proposer.finish"
                    self.proposer.finish(r.request_id)  # the response feeds the suffix cache
            except Exception as exc:
                self._fail([handle], stage, exc)
                continue
            if r.finished:
                self._retire(r, now)
            outputs.append(r.take_output())
        return outputs

    def _expire(self, now: float) -> list[RequestOutput]:
        """Ends with ``"time"`` every request whose deadline has passed (queued, prefilling,
        sitting out or not scheduled this step): its KV is freed and, as ``suffixspec.generate``
        does at ``max_time``, its partial response feeds the suffix cache. Returns their outputs."""
        outputs = []
        for r in [r for r in self._requests.values() if r.past_deadline(now)]:
            try:
                self.proposer.finish(r.request_id)  # the partial response feeds the suffix cache
            except Exception as exc:
                self._fail([r.handle], "proposer.finish", exc)
                continue
            r.finished, r.finish_reason = True, "time"
            self._retire(r, now)
            outputs.append(r.take_output())
        return outputs

    def _retire(self, r: EngineRequest, now: float) -> None:
        """Takes a finished request out of the scheduler (its KV freed) and the engine's maps,
        once the proposer has its response."""
        self.scheduler.finish(r.handle)
        r.stats.finish_time = now
        self._forget(r)

    def _forward(
        self, plan: Any, handles: list[int], drafts: dict[int, TokenTree], phase: str
    ) -> tuple[torch.Tensor, list[TokenTree], int]:
        """The step's model call on the plan's flat tokens: (logits of every token, the verified
        tree of each row, the number of tokens). Building its inputs is timed as the ``"tree"``
        phase, the model call as ``phase``."""
        built = time.perf_counter()
        ctx_lens, chunk_lens, query_lens = plan.context_lens, plan.chunk_lens, plan.query_lens
        offsets, nodes_all, parents_all = plan.tree_offsets, plan.tree_nodes, plan.tree_parents
        ids: list[int] = []
        positions: list[int] = []
        trees: list[TokenTree] = []
        row_parents: list[np.ndarray] = []
        for b, handle in enumerate(handles):
            r = self._by_handle[handle]
            ctx, chunk = int(ctx_lens[b]), int(chunk_lens[b])
            nodes, parents = nodes_all[offsets[b] : offsets[b + 1]], parents_all[offsets[b] : offsets[b + 1]]
            tokens = np.asarray(drafts[handle].token_ids)[nodes] if len(nodes) else np.zeros(0, np.int32)
            tree = TokenTree(np.asarray(tokens, dtype=np.int32), np.asarray(parents, dtype=np.int32))
            trees.append(tree)
            row_parents.append(np.asarray(parents, dtype=np.int64))
            ids.extend(r.tokens[ctx : ctx + chunk])
            ids.extend(np.asarray(tokens).tolist())
            positions.extend(range(ctx, ctx + chunk))
            positions.extend((ctx + chunk - 1 + _depths(np.asarray(parents))).tolist())
        device = self.info.device
        meta = step_meta(
            plan.slot_mapping,
            plan.block_tables,
            ctx_lens,
            chunk_lens,
            query_lens,
            row_parents,
            self.scheduler.block_size,
            device,
        )
        batch = PagedBatch(self.kv, meta, self.attention_backend)
        start = time.perf_counter()
        self.step_stats.add_phase("tree", start - built)
        with paged_attention_active(self.model), paged_batch(batch), torch.no_grad():
            out = self.model(
                input_ids=torch.tensor([ids], dtype=torch.long, device=device),
                position_ids=torch.tensor([positions], dtype=torch.long, device=device),
                use_cache=False,
                **{PAGED_KWARG: batch},
            )
        if device.type == "cuda":  # timed to completion; acceptance syncs right after anyway
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        self.step_stats.add_phase(phase, elapsed)
        self.step_stats.forward_time_s += elapsed
        self.step_stats.forward_passes += 1
        check_layers_ran(self.model, batch.layers_run, self.kv.num_layers)
        return out.logits[0], trees, len(ids)

    def _refit_step_cost(self, num_tokens: int, seconds: float) -> None:
        if self.step_cost is None:
            return
        try:
            points = self.step_cost.record(num_tokens, seconds)
            if points is not None:
                self.scheduler.set_cost_model(points)
        except Exception:  # no request depends on it: the scheduler keeps its previous model
            logger.exception("refitting the step-cost model failed; the previous model stays")

    def _verify(
        self,
        plan: Any,
        handles: list[int],
        trees: list[TokenTree],
        logits: torch.Tensor,
        marks: dict[int, tuple[int, float | None]],
    ) -> tuple[dict[int, int], list[tuple[int, int]]]:
        """Acceptance of every emitting row, one request at a time (a row that fails ends its
        request only, set back to its ``marks`` entry: its state before the step); returns the
        accepted node counts of the rows that did not fail and the K/V moves (flat source slot,
        flat destination slot) that compact their accepted nodes."""
        accepted: dict[int, int] = {}
        moves: list[tuple[int, int]] = []
        now = self.clock()
        row_starts = np.cumsum(plan.query_lens) - plan.query_lens  # each row's first flat token
        targets = self._greedy_targets(plan, handles, logits, row_starts)
        for b, handle in enumerate(handles):
            row_offset = int(row_starts[b])
            if not plan.emits[b]:
                accepted[handle] = 0
                continue
            r, tree = self._by_handle[handle], trees[b]
            mark = marks[handle]
            stage = "verification"
            try:
                nodes, row_moves = self._accept_row(
                    plan, b, r, tree, logits, row_offset, now, targets.get(handle)
                )
                new = r.tokens[mark[0] :]
                if new:
                    stage = "proposer.extend"
                    self.proposer.extend(r.request_id, np.asarray(new, dtype=np.int32))
            except Exception as exc:
                r.undo_emit(mark)
                self._fail([handle], stage, exc)
                continue
            moves.extend(row_moves)
            r.stats.steps += 1
            r.stats.draft_tokens += len(tree)
            r.stats.accepted_tokens += len(nodes)
            accepted[handle] = len(nodes)
        return accepted, moves

    def _greedy_targets(
        self, plan: Any, handles: list[int], logits: torch.Tensor, row_starts: np.ndarray
    ) -> dict[int, np.ndarray]:
        """The model's argmax over the root and nodes of every emitting greedy row without logits
        processors (those whose target is the plain argmax), in one device call and one
        transfer: one host sync per step instead of one per row, which matters on a GPU with
        hundreds of rows. Rows left out (sampling, processors) are scored one by one; so is every
        row if this fails, which then fails per row and ends only its own request."""
        spans: list[tuple[int, int]] = []
        owners: list[int] = []
        for b, handle in enumerate(handles):
            r = self._by_handle.get(handle)
            if not plan.emits[b] or r is None or r.params.do_sample or r.scorer.processors:
                continue
            start = int(row_starts[b])
            spans.append(
                (start + int(plan.chunk_lens[b]) - 1, start + int(plan.query_lens[b]))
            )  # root, nodes
            owners.append(handle)
        if not owners:
            return {}
        try:
            index = np.concatenate([np.arange(a, z) for a, z in spans])
            rows = torch.from_numpy(index).to(logits.device)
            flat = logits.index_select(0, rows).argmax(dim=-1).cpu().numpy()
        except Exception:
            logger.debug("batched greedy scoring failed; rows are scored one by one", exc_info=True)
            return {}
        bounds = np.cumsum([0] + [z - a for a, z in spans])
        return {h: flat[bounds[i] : bounds[i + 1]] for i, h in enumerate(owners)}

    def _accept_row(
        self,
        plan: Any,
        b: int,
        r: EngineRequest,
        tree: TokenTree,
        logits: torch.Tensor,
        row_offset: int,
        now: float,
        greedy_targets: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Verifies row ``b`` (request ``r``) and emits its tokens; returns the accepted nodes and
        the K/V moves that compact them. ``greedy_targets``: the row's argmax, when
        :meth:`_greedy_targets` computed it."""
        q, chunk, ctx = int(plan.query_lens[b]), int(plan.chunk_lens[b]), int(plan.context_lens[b])
        block = logits[row_offset + chunk - 1 : row_offset + q]  # the root, then the nodes
        if r.params.do_sample:
            nodes, bonus = accept_sampling([tree], r.scorer.probs(block)[None], r.generator)[0]
        else:
            if greedy_targets is None:
                greedy_targets = r.scorer.greedy(block).cpu().numpy()
            targets = greedy_targets[None]  # [1, nodes + 1]
            if self.acceptance is not None:
                targets = np.asarray(self.acceptance([r], [tree], targets), dtype=np.int64)
            if len(tree):
                nodes, bonus = accept_greedy([tree], targets)[0]
            else:
                nodes, bonus = np.zeros(0, np.int64), int(targets[0, 0])
        bs = self.scheduler.block_size
        table = plan.block_tables[b]
        moves = []
        for k, node in enumerate(np.asarray(nodes).tolist()):
            src = int(plan.slot_mapping[row_offset + chunk + node])
            pos = ctx + chunk + k
            dst = int(table[pos // bs]) * bs + pos % bs
            if src != dst:
                moves.append((src, dst))
        emitted = np.append(np.asarray(tree.token_ids)[nodes], bonus).astype(np.int32)
        r.emit(emitted, now)
        return np.asarray(nodes), moves

    # -- offline batches ------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Any],
        params: RequestParams | Sequence[RequestParams] | None = None,
        *,
        max_time: float | None = None,
        streamer: Any = None,
    ) -> list[RequestOutput]:
        """Runs ``prompts`` to completion (with any requests already running); returns their
        outputs in order, ``token_ids`` holding every generated token. When one of them fails
        (:meth:`step`), the others are aborted and its :class:`RequestFailedError` is raised.

        ``max_time`` (seconds of the engine's clock from this call, as ``suffixspec.generate``'s):
        at the first step boundary after it, the requests still unfinished end with
        ``finish_reason`` ``"time"`` (see ``RequestParams.max_time``; the earlier deadline wins).
        ``streamer``: an object with ``put(tensor)`` / ``end()`` (e.g.
        ``transformers.TextStreamer``), one prompt only: it gets the prompt's ids, then every
        step's new tokens in order, then ``end()`` once, as with ``suffixspec.generate``."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidParameterError("prompts must be a sequence of prompts (text or token ids)")
        if params is None or isinstance(params, RequestParams):
            per_prompt = [params] * len(prompts)
        else:
            per_prompt = list(params)
            if len(per_prompt) != len(prompts):
                raise InvalidParameterError(f"{len(per_prompt)} params for {len(prompts)} prompts")
        if max_time is not None:
            check_real("max_time", max_time, minimum=0.0)
        sink = None if streamer is None else StreamSink(streamer, len(prompts))
        deadline = None if max_time is None else self.clock() + max_time
        ids = [("suffixspec.Engine.generate", next(self._auto_ids)) for _ in prompts]
        added = []
        try:
            for rid, prompt, p in zip(ids, prompts, per_prompt, strict=True):
                self.add_request(rid, prompt, p)
                added.append(rid)
        except BaseException:
            for rid in added:
                self.abort(rid)
            raise
        if deadline is not None:
            for rid in ids:
                request = self._requests[rid]
                request.deadline = deadline if request.deadline is None else min(request.deadline, deadline)
        try:
            if sink is not None:
                sink.prompt(np.asarray(self._requests[ids[0]].prompt))
            return self._run_to_end(ids, sink)
        finally:
            if sink is not None:
                sink.end()

    def _run_to_end(self, ids: Sequence[Hashable], sink: StreamSink | None) -> list[RequestOutput]:
        """Steps until every request of ``ids`` has ended; returns their whole outputs in order."""
        mine = set(ids)
        results: dict[Hashable, RequestOutput] = {}
        while len(results) < len(ids):
            for output in self.step():
                if output.request_id not in mine:
                    continue
                if sink is not None:
                    sink.tokens(np.asarray(output.new_token_ids, dtype=np.int64))
                if output.finished:
                    if output.error is not None:  # an offline batch is whole or nothing
                        for rid in ids:
                            if rid in self:
                                self.abort(rid)
                        raise output.error
                    results[output.request_id] = output
        final = []
        for rid in ids:
            out = results[rid]
            out.new_token_ids, out.new_text = list(out.token_ids), out.text
            final.append(out)
        return final
