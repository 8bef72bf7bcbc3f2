"""suffixspec as an SGLang speculative algorithm: ``--speculative-algorithm SUFFIX``.

The entry point :func:`register` (group ``sglang.srt.plugins``, loaded by SGLang in every
process) registers the algorithm ``SUFFIX`` in SGLang's speculative-algorithm registry
(``SpeculativeAlgorithm.register``). It reuses SGLang's n-gram verification path: the worker is a
subclass of SGLang's ``NGRAMWorker`` whose drafts come from suffixspec instead of SGLang's n-gram
corpus, converted to the format that path verifies (:func:`trees_to_sglang`).

The conversion and the draft source are plain numpy and run without SGLang; SGLang's worker needs
its CUDA kernel package, so end-to-end runs need a GPU (``tests/integrations/sglang_e2e.py``).

This module imports no SGLang module at import time.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from suffixspec._native import TokenTree
from suffixspec.cache import SuffixCache
from suffixspec.config import SpecConfig
from suffixspec.errors import EngineIntegrationError, InvalidParameterError
from suffixspec.proposer import SuffixProposer, fit_tree

__all__ = [
    "ALGORITHM",
    "TESTED_SGLANG_VERSIONS",
    "SuffixDraftSource",
    "register",
    "tree_to_sglang",
    "trees_to_sglang",
]

#: The name of the algorithm in SGLang (``--speculative-algorithm SUFFIX``).
ALGORITHM = "SUFFIX"
#: SGLang releases whose registry, plugin group and n-gram draft format this module was read and
#: tested against.
TESTED_SGLANG_VERSIONS = ("0.5.23",)


def tree_to_sglang(
    tree: TokenTree, last_token: int, width: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """One request's draft in the layout of SGLang's n-gram verification (``fillResult`` of its
    n-gram corpus): ``width`` slots, slot 0 the last verified token, then the tree's nodes in
    breadth-first order (children in the tree's index order), then padding (token 0, a child of
    slot 0). ``mask[i, j]`` is true iff slot ``j`` is slot ``i`` or one of its ancestors (slot 0 is
    every slot's ancestor). A tree of more than ``width - 1`` nodes keeps its ``width - 1`` best
    (:meth:`TokenTree.prune`).

    Returns:
        (tokens [width] int64, mask [width, width] bool).
    """
    if width < 1:
        raise InvalidParameterError(f"width must be >= 1, got {width}")
    tree = fit_tree(tree, width - 1, width - 1)
    parents = np.asarray(tree.parents)
    tokens_in = np.asarray(tree.token_ids)
    offsets, children = tree.children_csr()
    # Breadth-first: a FIFO over node indices, row r of the CSR holding node r - 1's children.
    order: list[int] = []
    queue = list(children[offsets[0] : offsets[1]])
    head = 0
    while head < len(queue):
        node = int(queue[head])
        head += 1
        order.append(node)
        queue.extend(children[offsets[node + 1] : offsets[node + 2]])
    slot_of = np.empty(len(tree), dtype=np.int64)
    slot_of[order] = np.arange(1, len(order) + 1)
    tokens = np.zeros(width, dtype=np.int64)
    tokens[0] = last_token
    tokens[1 : len(order) + 1] = tokens_in[order]
    parent_slot = np.zeros(width, dtype=np.int64)  # padding hangs under slot 0
    parent_slot[0] = -1
    for slot, node in enumerate(order, start=1):
        parent_slot[slot] = 0 if parents[node] < 0 else slot_of[parents[node]]
    mask = np.zeros((width, width), dtype=np.bool_)
    mask[0, 0] = True
    for slot in range(1, width):  # parents come before children in BFS order
        mask[slot] = mask[parent_slot[slot]]
        mask[slot, slot] = True
    return tokens, mask


def trees_to_sglang(
    trees: Sequence[TokenTree], last_tokens: Sequence[int], width: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A batch in the flat layout SGLang's ``NgramCorpus.batch_get`` returns: tokens
    ``[B * width]`` and mask ``[B * width * width]``, both int64 (see :func:`tree_to_sglang`)."""
    if len(trees) != len(last_tokens):
        raise InvalidParameterError(f"{len(trees)} trees but {len(last_tokens)} last tokens")
    tokens = np.zeros((len(trees), width), dtype=np.int64)
    mask = np.zeros((len(trees), width, width), dtype=np.int64)
    for b, (tree, last) in enumerate(zip(trees, last_tokens, strict=True)):
        tokens[b], mask[b] = tree_to_sglang(tree, int(last), width)
    return tokens.reshape(-1), mask.reshape(-1)


class SuffixDraftSource:
    """The draft side of the SGLang worker, engine-free: each step gets the batch's requests
    (id, prompt, output so far), starts the ones seen for the first time, appends their new output
    tokens, stops the ones that left, and drafts every request's tree in one native call.

    `spec` defaults to suffixspec's defaults with tree drafts (SGLang verifies trees)."""

    def __init__(self, width: int, spec: SpecConfig | None = None):
        if width < 1:
            raise InvalidParameterError(f"width must be >= 1, got {width}")
        self.width = width
        self.spec = spec if spec is not None else SpecConfig(use_tree_spec=True)
        self.proposer = SuffixProposer(SuffixCache(**self.spec.cache_kwargs()), self.spec)
        self._seen: dict[Hashable, int] = {}  # request -> output tokens appended so far

    def draft(
        self, req_ids: Sequence[Hashable], prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        proposer = self.proposer
        present = set(req_ids)
        for gone in [r for r in self._seen if r not in present]:
            proposer.finish(gone)
            del self._seen[gone]
        contexts = []
        for req_id, prompt, output in zip(req_ids, prompts, outputs, strict=True):
            if req_id not in self._seen:
                proposer.start(req_id, np.asarray(prompt, dtype=np.int32))
                self._seen[req_id] = 0
            new = output[self._seen[req_id] :]
            if len(new):
                proposer.extend(req_id, np.asarray(new, dtype=np.int32))
                self._seen[req_id] = len(output)
            tail = self.proposer.context_len
            context = list(prompt[-tail:]) + list(output[-tail:])
            contexts.append(np.asarray(context[-tail:], dtype=np.int32))
        budget = self.width - 1
        trees = proposer.propose(list(req_ids), contexts, [budget] * len(contexts), [budget] * len(contexts))
        return trees_to_sglang(trees, [int(c[-1]) if len(c) else 0 for c in contexts], self.width)

    def reset(self) -> None:
        for req_id in list(self._seen):
            self.proposer.finish(req_id)
        self._seen.clear()


# --- the plugin (imports SGLang) ---


def _installed_sglang_version() -> str:
    from sglang.version import __version__

    return str(__version__)


def _worker_class() -> type:
    from sglang.srt.speculative.ngram_worker import NGRAMWorker

    class SuffixWorker(NGRAMWorker):  # type: ignore[misc,valid-type]
        """SGLang's n-gram worker drafting from suffixspec (synchronous schedule: output_ids are
        complete when drafts are prepared)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.suffix_source = SuffixDraftSource(self.draft_token_num)

        def _prepare_draft_tokens(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
            reqs = batch.reqs
            return self.suffix_source.draft(
                [req.rid for req in reqs],
                [req.origin_input_ids_unpadded for req in reqs],
                [req.output_ids for req in reqs],
            )

        def _update_ngram_corpus(self, batch: Any) -> None:
            """suffixspec's cache learns in `_prepare_draft_tokens`; SGLang's corpus is unused."""

        def clear_cache_pool(self) -> None:
            super().clear_cache_pool()
            self.suffix_source.reset()

    return SuffixWorker


def _spec_class() -> type:
    from sglang.srt.speculative.spec_registry import CustomSpecAlgo

    class SuffixSpecAlgo(CustomSpecAlgo):  # type: ignore[misc,valid-type]
        """Takes SGLang's n-gram branches (tree verification with a custom mask, no draft KV)."""

        def is_ngram(self) -> bool:
            return True

        def has_draft_kv(self) -> bool:
            return False

        def handle_server_args(self, server_args: Any) -> None:
            # The n-gram defaults (SGLang's _handle_ngram), synchronous scheduling.
            server_args.disable_overlap_schedule = True
            server_args.enable_mixed_chunk = False
            if server_args.speculative_num_draft_tokens is None:
                server_args.speculative_num_draft_tokens = 12
            if server_args.speculative_num_steps is None:
                server_args.speculative_num_steps = server_args.speculative_num_draft_tokens
            if server_args.speculative_eagle_topk is None:
                server_args.speculative_eagle_topk = 1

    return SuffixSpecAlgo


def register() -> None:
    """The ``sglang.srt.plugins`` entry point: registers ``SUFFIX`` (idempotent).

    Raises:
        EngineIntegrationError: an SGLang release this module was not tested with (SGLang logs
            the failure; ``SUFFIX`` then stays unknown to it).
    """
    version = _installed_sglang_version()
    if version not in TESTED_SGLANG_VERSIONS:
        raise EngineIntegrationError(
            f"suffixspec's SGLang plugin is tested with SGLang {', '.join(TESTED_SGLANG_VERSIONS)}, "
            f"not {version}: speculative algorithm {ALGORITHM} is not registered"
        )
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from sglang.srt.speculative.spec_registry import get_spec

    if get_spec(ALGORITHM) is not None:
        return
    worker = None

    def factory(server_args: Any) -> type:
        nonlocal worker
        if worker is None:
            worker = _worker_class()
        return worker

    SpeculativeAlgorithm.register(ALGORITHM, supports_overlap=False, spec_class=_spec_class())(factory)
