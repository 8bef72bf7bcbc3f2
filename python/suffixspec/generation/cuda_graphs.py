"""Plain decode steps replayed as CUDA graphs over a static KV cache (opt-in; Llama family).

An HF eager decode step is launch- and Python-bound (10-25 ms on an H200 against a weight-read
limit of 0.5-3.4 ms). :class:`GraphDecoder` removes that overhead for plain one-token-per-request
decoding: per *bucket* (a batch size of ``buckets``), it keeps one transformers ``StaticCache`` of
``max_len`` positions and a few static input buffers, captures one decode step of the model on
them as a CUDA graph, and then decodes by copying the step's input tokens into the static buffer
and replaying the graph. Everything that changes from step to step lives on the device and is
advanced inside the graph itself: the cache slot (shared by every row: prompts are left-padded),
each row's position id, and the visibility of cache slots (a bool ``[bucket, max_len]`` mask that
the step marks visible for its own slot before attending). Prefill stays eager.

A batch smaller than its bucket is filled with copies of its first row (fed the same tokens), so
every row of the graph attends to something real; their logits are never returned. Rows do not
leave the batch when they finish (the shapes are fixed): the caller ignores them.

``capture=False`` runs the very same step function eagerly (no graph): on a CPU it is the way to
check that the step computes the eager logits, so that a GPU run only has to check the capture.

``verify(tokens, tree_mask)`` runs a fixed-shape verification step of the active batch: per row a
token tree of at most a *node bucket* of nodes (padded with nodes that see only the prefix and
themselves), attending to the committed prefix and to its tree ancestors, at positions prefix +
depth; it returns the logits of every node and leaves the committed state unchanged (the tree's
KV entries are scratch, overwritten by the next step). It is captured per (batch bucket, node
bucket). Committing accepted tree tokens into the static cache (KV compaction) is not built: the
speculative loop keeps its eager path; this step measures what a captured verification costs.

Not covered (the caller keeps the eager path): architectures other than the ``llama`` model type,
attention implementations other than ``sdpa``, sliding-window or non-attention layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from suffixspec.errors import IncompatibleModelError, InvalidParameterError, KernelUnavailableError

#: Batch-size buckets: a batch runs in the smallest bucket that holds it.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Tree-size buckets of verification steps (nodes per row, root included).
DEFAULT_NODE_BUCKETS = (16, 32, 64, 128)
#: transformers model types whose decode step is captured (HF's Llama forward with a static cache
#: and an explicit 4D mask has no host synchronisation and no data-dependent Python branch).
SUPPORTED_MODEL_TYPES = frozenset({"llama"})


def bucket_for(size: int, buckets: Sequence[int], what: str = "batch") -> int:
    """The smallest bucket holding `size` (rows of a batch, or nodes of a tree)."""
    if size < 1:
        raise InvalidParameterError(f"{what} must be >= 1, got {size}")
    fitting = [b for b in buckets if b >= size]
    if not fitting:
        raise InvalidParameterError(f"{what} {size} exceeds the largest bucket {max(buckets)}")
    return min(fitting)


def check_graph_support(model: Any) -> None:
    """Raises :class:`IncompatibleModelError` where the decode step cannot be captured."""
    from suffixspec.generation.compat import inspect_model, original_attn_implementation

    info = inspect_model(model)  # a causal LM with a per-token KV cache (raises otherwise)
    name = type(model).__name__
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise IncompatibleModelError(
            f"{name} (model type {model_type!r}): CUDA-graph decoding supports "
            f"{sorted(SUPPORTED_MODEL_TYPES)}"
        )
    if set(info.layer_types) != {"full_attention"}:
        kinds = sorted(set(info.layer_types))
        raise IncompatibleModelError(f"{name} has layers {kinds}: CUDA-graph decoding needs full attention")
    attn = original_attn_implementation(model)
    if attn != "sdpa":
        raise IncompatibleModelError(f"{name} uses attention {attn!r}: CUDA-graph decoding needs 'sdpa'")


@dataclass
class _Bucket:
    """The static state of one batch-size bucket (addresses fixed for the graph's lifetime)."""

    size: int
    cache: Any  # transformers.StaticCache of [size, kv_heads, max_len, head_dim] per layer
    ids: torch.Tensor  # [size, 1] int64: the step's input tokens (copied in before each replay)
    positions: torch.Tensor  # [size, 1] int64: each row's position id (advanced by the step)
    slot: torch.Tensor  # [1] int64: the cache slot the step writes (advanced by the step)
    visible: torch.Tensor  # [size, max_len] bool: cache slots each row attends to
    logits: torch.Tensor | None = None  # [size, vocab]: the captured step's output
    graph: Any = None  # torch.cuda.CUDAGraph once captured
    verifiers: dict[int, _Verifier] = field(default_factory=dict)  # by node bucket


@dataclass
class _Verifier:
    """The static buffers of one verification shape (batch bucket x node bucket)."""

    ids: torch.Tensor  # [size, nodes] int64: the trees' tokens
    tree: torch.Tensor  # [size, nodes, nodes] bool: node i sees node j (its ancestors and itself)
    logits: torch.Tensor | None = None  # [size, nodes, vocab]: the captured step's output
    graph: Any = None


class GraphDecoder:
    """Plain decoding of one batch at a time over static buffers (see the module doc).

    ``start(prompts)`` prefills (eager) and returns the last prompt position's logits ``[B, V]``;
    each ``step(tokens)`` feeds one token per row and returns the next logits ``[B, V]``;
    ``verify(tokens, tree_mask)`` returns the logits of a token tree per row ``[B, n, V]`` without
    committing it. Returned logits are views of static buffers when captured: read them before
    the next call. ``greedy(prompts, n)`` is plain greedy decoding on top of start/step.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_len: int,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        node_buckets: Sequence[int] = DEFAULT_NODE_BUCKETS,
        capture: bool | None = None,
    ) -> None:
        check_graph_support(model)
        if max_len < 2:
            raise InvalidParameterError(f"max_len must be >= 2, got {max_len}")
        if not buckets or min(buckets) < 1:
            raise InvalidParameterError(f"buckets must be positive batch sizes, got {list(buckets)}")
        if not node_buckets or min(node_buckets) < 1:
            raise InvalidParameterError(f"node_buckets must be positive tree sizes, got {list(node_buckets)}")
        self.device = next(model.parameters()).device
        if capture is None:
            capture = self.device.type == "cuda"
        if capture and (self.device.type != "cuda" or not torch.cuda.is_available()):
            raise KernelUnavailableError(
                f"CUDA graphs need the model on a CUDA device (it is on {self.device}); pass capture=False"
            )
        from suffixspec.generation.compat import inspect_model

        self.model = model
        info = inspect_model(model)
        self.cache_kwarg = info.cache_kwarg
        # The prefill needs the last position's logits only (not [B, prompt, vocab]).
        self._last_logits_only = {"logits_to_keep": 1} if info.supports_logits_to_keep else {}
        self.max_len = int(max_len)
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.node_buckets = tuple(sorted(set(int(b) for b in node_buckets)))
        self.capture = bool(capture)
        self._buckets: dict[int, _Bucket] = {}
        self._pool: Any = None
        self._active: _Bucket | None = None
        self._batch = 0
        self._written = 0  # cache slots used by the active batch (prompt width + steps)

    # -- buffers and capture -----------------------------------------------------------------------
    def _bucket(self, size: int) -> _Bucket:
        bucket = self._buckets.get(size)
        if bucket is None:
            bucket = self._new_bucket(size)
            if self.capture:
                self._capture(bucket, lambda: self._forward(bucket), "logits", bucket)
                self._reset(bucket)  # the warm-up advanced slot, positions and the cache's own length
            self._buckets[size] = bucket
        return bucket

    def _new_bucket(self, size: int) -> _Bucket:
        from transformers import StaticCache

        config = self.model.config
        on = {"device": self.device}
        return _Bucket(
            size=size,
            cache=StaticCache(config=config, max_cache_len=self.max_len),
            ids=torch.zeros((size, 1), dtype=torch.long, **on),
            positions=torch.zeros((size, 1), dtype=torch.long, **on),
            slot=torch.zeros(1, dtype=torch.long, **on),
            visible=torch.zeros((size, self.max_len), dtype=torch.bool, **on),
        )

    def _forward(self, bucket: _Bucket) -> torch.Tensor:
        """One decode step on the bucket's static buffers; the function that is captured."""
        bucket.visible.index_fill_(1, bucket.slot, True)  # the step's own slot, then attend
        out = self.model(
            input_ids=bucket.ids,
            position_ids=bucket.positions,
            attention_mask=bucket.visible[:, None, None, :],  # 4D: used as is (no host sync)
            use_cache=True,
            **{self.cache_kwarg: bucket.cache},
        )
        bucket.slot.add_(1)
        bucket.positions.add_(1)
        return out.logits[:, -1]

    @torch.inference_mode()
    def _reset(self, bucket: _Bucket) -> None:
        bucket.cache.reset()  # in place: the captured addresses stay valid
        bucket.slot.zero_()
        bucket.positions.zero_()
        bucket.visible.zero_()

    def _capture(self, bucket: _Bucket, step: Any, output: str, holder: Any) -> None:
        """Warm-up runs of `step` on a side stream (allocate the cache, cuBLAS workspaces), then
        its capture; the captured output tensor goes to `holder.<output>`, the graph to
        `holder.graph`. The caller undoes what the warm-up runs changed."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(2):
                step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            setattr(holder, output, step())
        holder.graph = graph

    # -- decoding ------------------------------------------------------------------------------------
    def start(self, prompts: Sequence[np.ndarray | Sequence[int]]) -> torch.Tensor:
        """Prefills `prompts` (left-padded, eager) into the bucket of their batch size; returns the
        logits of each prompt's last token, ``[B, V]``."""
        rows = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
        if not rows or any(r.size == 0 for r in rows):
            raise InvalidParameterError("every prompt needs at least one token")
        width = max(r.size for r in rows)
        if width >= self.max_len:
            raise InvalidParameterError(f"a {width}-token prompt leaves no room in max_len={self.max_len}")
        bucket = self._bucket(bucket_for(len(rows), self.buckets))
        rows = rows + [rows[0]] * (bucket.size - len(rows))  # filler rows copy the first one
        ids = np.zeros((bucket.size, width), dtype=np.int64)
        valid = np.zeros((bucket.size, width), dtype=bool)
        for b, row in enumerate(rows):
            ids[b, width - row.size :] = row
            valid[b, width - row.size :] = True
        valid_t = torch.from_numpy(valid).to(self.device)
        self._reset(bucket)
        with torch.inference_mode():
            logits = self._prefill(bucket, torch.from_numpy(ids).to(self.device), valid_t)
            bucket.visible[:, :width] = valid_t
            bucket.slot.fill_(width)
            bucket.positions.copy_(valid_t.sum(-1, keepdim=True))
        self._active, self._batch, self._written = bucket, len(prompts), width
        return logits[: self._batch]

    def _prefill(self, bucket: _Bucket, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        width = ids.shape[1]
        q = torch.arange(width, device=self.device)
        k = torch.arange(self.max_len, device=self.device)
        causal = k[None, :] <= q[:, None]  # [width, max_len]; slots >= width are never <= q
        key_valid = torch.zeros((bucket.size, self.max_len), dtype=torch.bool, device=self.device)
        key_valid[:, :width] = valid
        # A padding query row sees itself, so that no row is fully masked (NaN-free cache entries).
        mask = (causal[None] & key_valid[:, None, :]) | (k[None, None, :] == q[None, :, None])
        positions = (valid.long().cumsum(-1) - 1).clamp_(min=0)
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=mask[:, None],
            use_cache=True,
            **{self.cache_kwarg: bucket.cache},
            **self._last_logits_only,
        )
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Feeds one token per row of the active batch; returns the next logits ``[B, V]``."""
        bucket = self._active
        if bucket is None:
            raise InvalidParameterError("step() before start()")
        if self._written >= self.max_len:
            raise InvalidParameterError(f"the static cache of {self.max_len} positions is full")
        tokens_t = torch.as_tensor(tokens, dtype=torch.long).reshape(-1).to(self.device)
        if tokens_t.numel() != self._batch:
            raise InvalidParameterError(f"step() needs {self._batch} tokens, got {tokens_t.numel()}")
        with torch.inference_mode():
            bucket.ids[: self._batch, 0].copy_(tokens_t)
            if bucket.size > self._batch:  # filler rows follow the first row
                bucket.ids[self._batch :, 0].copy_(tokens_t[:1].expand(bucket.size - self._batch))
            self._written += 1
            if bucket.graph is None:
                return self._forward(bucket)[: self._batch]
            bucket.graph.replay()
            assert bucket.logits is not None
            return bucket.logits[: self._batch]

    # -- verification --------------------------------------------------------------------------------
    def verify(self, tokens: torch.Tensor, tree_mask: torch.Tensor) -> torch.Tensor:
        """One verification step of the active batch: `tokens` ``[B, n]`` (node 0 = the tree's
        root, the token a decode step would feed), `tree_mask` ``[B, n, n]`` bool (node i sees node
        j: its ancestors and itself). Returns the logits of every node ``[B, n, V]`` (a view of a
        static buffer when captured); the committed state is unchanged."""
        bucket = self._active
        if bucket is None:
            raise InvalidParameterError("verify() before start()")
        tokens = torch.as_tensor(tokens, dtype=torch.long).to(self.device)
        tree = torch.as_tensor(tree_mask, dtype=torch.bool).to(self.device)
        batch, n = tokens.shape if tokens.ndim == 2 else (-1, -1)
        if batch != self._batch or tree.shape != (batch, n, n):
            raise InvalidParameterError(
                f"verify() needs tokens [{self._batch}, n] and tree_mask [{self._batch}, n, n], "
                f"got {tuple(tokens.shape)} and {tuple(tree.shape)}"
            )
        nodes = bucket_for(n, self.node_buckets, "tree of")
        if self._written + nodes > self.max_len:
            raise InvalidParameterError(
                f"a {nodes}-node tree does not fit the static cache of {self.max_len}"
            )
        verifier = self._verifier(bucket, nodes)
        with torch.inference_mode():
            verifier.ids.zero_()
            verifier.tree.copy_(
                torch.eye(nodes, dtype=torch.bool, device=self.device).expand_as(verifier.tree)
            )
            verifier.ids[:batch, :n].copy_(tokens)
            verifier.tree[:batch, :n, :n].copy_(tree)
            if bucket.size > batch:  # filler rows follow the first row
                verifier.ids[batch:].copy_(verifier.ids[:1].expand(bucket.size - batch, -1))
                verifier.tree[batch:].copy_(verifier.tree[:1].expand(bucket.size - batch, -1, -1))
            if verifier.graph is None:
                return self._verify_forward(bucket, verifier)[:batch, :n]
            verifier.graph.replay()
            assert verifier.logits is not None
            return verifier.logits[:batch, :n]

    def _verifier(self, bucket: _Bucket, nodes: int) -> _Verifier:
        verifier = bucket.verifiers.get(nodes)
        if verifier is None:
            on = {"device": self.device}
            verifier = _Verifier(
                ids=torch.zeros((bucket.size, nodes), dtype=torch.long, **on),
                tree=torch.eye(nodes, dtype=torch.bool, **on).repeat(bucket.size, 1, 1),
            )
            if self.capture:  # the warm-up runs leave the committed state as it was
                self._capture(bucket, lambda: self._verify_forward(bucket, verifier), "logits", verifier)
            bucket.verifiers[nodes] = verifier
        return verifier

    def _verify_forward(self, bucket: _Bucket, verifier: _Verifier) -> torch.Tensor:
        """One verification forward on static buffers; the function that is captured. The tree's
        KV entries go to the slots after the committed prefix and are then given up again."""
        from suffixspec.generation.compat import rewind_static_cache

        nodes = verifier.ids.shape[1]
        slots = bucket.slot + torch.arange(nodes, device=self.device)
        mask = bucket.visible[:, None, :].expand(-1, nodes, -1).clone()  # the committed prefix
        mask.index_copy_(2, slots, verifier.tree)  # and the tree's own ancestors
        positions = bucket.positions + verifier.tree.sum(-1) - 1  # prefix length + depth
        out = self.model(
            input_ids=verifier.ids,
            position_ids=positions,
            attention_mask=mask[:, None],
            use_cache=True,
            **{self.cache_kwarg: bucket.cache},
        )
        rewind_static_cache(bucket.cache, nodes)
        return out.logits

    def greedy(self, prompts: Sequence[np.ndarray | Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Plain greedy decoding of `prompts` as one batch: `max_new_tokens` tokens per prompt."""
        if max_new_tokens < 1:
            raise InvalidParameterError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        logits = self.start(prompts)
        chosen = [logits.argmax(-1)]
        for _ in range(max_new_tokens - 1):
            chosen.append(self.step(chosen[-1]).argmax(-1))
        return torch.stack(chosen, dim=1).cpu().tolist()

    @property
    def captured_buckets(self) -> tuple[int, ...]:
        """Buckets whose decode step is captured (empty without capture)."""
        return tuple(size for size, b in sorted(self._buckets.items()) if b.graph is not None)

    @property
    def captured_verifiers(self) -> tuple[tuple[int, int], ...]:
        """(batch bucket, node bucket) of every captured verification step."""
        return tuple(
            (size, nodes)
            for size, b in sorted(self._buckets.items())
            for nodes, v in sorted(b.verifiers.items())
            if v.graph is not None
        )
