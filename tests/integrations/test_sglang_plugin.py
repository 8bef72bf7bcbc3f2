"""suffixspec's SGLang plugin against the real sglang 0.5.23 package, on CPU: run by
`./dev test-engines` in its own venv (sglang without its CUDA kernel packages).

The golden tests compare the conversion with SGLang's own n-gram corpus (its C++ source, compiled
here by SGLang's JIT): a tree SGLang drafts, rebuilt as a TokenTree and converted by suffixspec,
is SGLang's output bit for bit.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sglang", reason="the SGLang plugin tests run in ./dev test-engines' virtualenv")

from suffixspec import TokenTree
from suffixspec.integrations import sglang as plugin


def test_entry_point_registers_the_algorithm() -> None:
    from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

    assert GENERAL_PLUGINS_GROUP == "sglang.srt.plugins"
    load_plugins()  # discovers suffixspec's entry point, as every SGLang process does
    algo = SpeculativeAlgorithm.from_string("suffix")
    assert algo.name == "SUFFIX" and algo.is_speculative() and algo.is_ngram()
    assert not algo.has_draft_kv() and not algo.supports_overlap
    plugin.register()  # idempotent
    args = SimpleNamespace(
        speculative_num_draft_tokens=None, speculative_num_steps=None, speculative_eagle_topk=None
    )
    algo.handle_server_args(args)
    assert (args.speculative_num_draft_tokens, args.disable_overlap_schedule) == (12, True)


def test_worker_needs_sglangs_cuda_kernels() -> None:
    pytest.importorskip("sgl_kernel", reason="SGLang's n-gram worker imports its CUDA kernel package")
    from sglang.srt.speculative.ngram_worker import NGRAMWorker

    assert issubclass(plugin._worker_class(), NGRAMWorker)


def _sglang_draft(sequences: list[list[int]], context: list[int], width: int) -> tuple[np.ndarray, ...]:
    from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus

    corpus = NgramCorpus(
        max_trie_depth=8, min_bfs_breadth=1, max_bfs_breadth=3, draft_token_num=width, match_type="BFS"
    )
    corpus.batch_put(sequences)
    corpus.synchronize()
    return corpus.batch_get(["r"], [context], [len(context)])


def _as_token_tree(tokens: np.ndarray, mask: np.ndarray) -> TokenTree:
    """SGLang's draft (no token 0 but padding) as a TokenTree: slot k is node k - 1, its parent the
    nearest earlier slot in its mask row (SGLang's own rule, `_derive_tree_links`)."""
    width = len(tokens)
    mask = mask.reshape(width, width)
    real = [k for k in range(1, width) if tokens[k] != 0]
    parents = [max(j for j in range(k) if mask[k, j]) - 1 for k in real]
    return TokenTree(tokens[real].astype(np.int32), np.array(parents, dtype=np.int32))


@pytest.mark.parametrize(
    ("sequences", "context"),
    [
        ([[1, 2, 3, 4, 5, 6, 7]], [1, 2]),  # a path
        ([[1, 2, 3, 4], [1, 2, 5, 6], [1, 2, 3, 7], [8, 1, 2, 9]], [8, 1, 2]),  # a tree
        ([[3, 1, 4, 1, 5, 9, 2, 6], [3, 1, 4, 2, 7], [1, 4, 1, 8]], [3, 1, 4]),
    ],
)
def test_conversion_is_sglangs_format(sequences: list[list[int]], context: list[int]) -> None:
    width = 8
    tokens, mask = _sglang_draft(sequences, context, width)
    tree = _as_token_tree(tokens, mask)
    assert len(tree) > 0
    ours_tokens, ours_mask = plugin.trees_to_sglang([tree], [context[-1]], width)
    np.testing.assert_array_equal(ours_tokens, tokens)
    np.testing.assert_array_equal(ours_mask, mask)


def test_sglang_reads_suffixspec_trees_back() -> None:
    from sglang.srt.speculative.cpp_ngram.ngram_corpus import NgramCorpus

    tree = TokenTree([11, 13, 15, 12, 14], [-1, 0, 1, -1, 3])
    tokens, mask = plugin.tree_to_sglang(tree, 99, width=8)
    # SGLang's leaf-path reader (its debug helper) sees exactly the tree's root-to-leaf paths.
    paths = NgramCorpus.leaf_paths_from_mask(None, tokens.tolist(), mask.astype(int).tolist())
    assert sorted(paths) == sorted([[99, 11, 13, 15], [99, 12, 14], [99, 0], [99, 0]])
