"""`suffixspec.generation.cuda_graphs` on the CPU: everything but the capture itself. The step
function that a GPU captures runs here uncaptured (``capture=False``) and must compute the eager
logits, so that a GPU run only has to check the capture (``tests/test_cuda_graphs_gpu.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suffixspec.errors import IncompatibleModelError, InvalidParameterError, KernelUnavailableError
from suffixspec.generation.cuda_graphs import DEFAULT_BUCKETS, GraphDecoder, bucket_for
from tiny_models import plain_greedy_tokens, random_prompts, tiny_model

pytest.importorskip("transformers")


def llama(**overrides):
    model = tiny_model("LlamaForCausalLM", **overrides)
    model.config._attn_implementation = "sdpa"
    return model


def eager_logits(model, prompts, steps: int):
    """The plain eager loop (DynamicCache, 2D padding mask, left-padded batch) fed its own greedy
    tokens: the logits of the prefill's last position, then of each step."""
    from transformers import DynamicCache

    from suffixspec.generation.batch import left_pad

    ids, mask = left_pad([np.asarray(p) for p in prompts], pad_id=0)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    positions = (mask_t.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.inference_mode():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions, past_key_values=cache)
        logits = [out.logits[:, -1]]
        next_pos = positions[:, -1:] + 1
        for _ in range(steps):
            mask_t = torch.cat([mask_t, mask_t.new_ones((len(prompts), 1))], dim=1)
            token = logits[-1].argmax(-1, keepdim=True)
            out = model(input_ids=token, attention_mask=mask_t, position_ids=next_pos, past_key_values=cache)
            logits.append(out.logits[:, -1])
            next_pos = next_pos + 1
    return logits


def test_buckets_pick_the_smallest_that_holds_the_batch():
    assert [bucket_for(b, DEFAULT_BUCKETS) for b in (1, 2, 3, 5, 8, 9, 64)] == [1, 2, 4, 8, 8, 16, 64]
    assert bucket_for(3, (8, 2)) == 8
    with pytest.raises(InvalidParameterError, match="largest bucket"):
        bucket_for(65, DEFAULT_BUCKETS)
    with pytest.raises(InvalidParameterError):
        bucket_for(0, DEFAULT_BUCKETS)


def test_the_uncaptured_step_computes_the_eager_logits():
    model = llama()
    prompts = random_prompts([7, 12, 3])
    decoder = GraphDecoder(model, max_len=64, capture=False)
    expected = eager_logits(model, prompts, steps=12)
    got = [decoder.start(prompts)]
    got += [decoder.step(expected[step].argmax(-1)) for step in range(12)]
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape == (3, model.config.vocab_size)
        # Same computation over a longer (masked) static cache: equal up to fp32 rounding.
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        assert torch.equal(g.argmax(-1), e.argmax(-1))


def test_greedy_equals_model_generate_in_every_bucket():
    model = llama()
    decoder = GraphDecoder(model, max_len=48, buckets=(1, 4), capture=False)
    for lengths in ([9], [5, 11, 2]):  # bucket 1; bucket 4 with one filler row
        prompts = random_prompts(lengths, seed=len(lengths))
        got = decoder.greedy(prompts, 16)
        assert got == [plain_greedy_tokens(model, p, 16) for p in prompts]
    assert decoder.captured_buckets == ()  # nothing captured on a CPU


def test_static_buffers_are_reused_and_reset_between_batches():
    model = llama()
    decoder = GraphDecoder(model, max_len=40, buckets=(2,), capture=False)
    first = random_prompts([6, 9], seed=3)
    a = decoder.greedy(first, 10)
    bucket = decoder._buckets[2]
    cache_keys = bucket.cache.layers[0].keys
    decoder.greedy(random_prompts([20, 4], seed=4), 10)  # a longer batch in between
    assert decoder.greedy(first, 10) == a  # no state leaks from one batch into the next
    assert decoder._buckets[2] is bucket and bucket.cache.layers[0].keys is cache_keys  # same addresses
    # The step advanced the device-side slot (padded prompt width + 9 steps) and positions itself.
    assert int(bucket.slot) == 9 + 9
    assert bucket.positions[:, 0].tolist() == [6 + 9, 9 + 9]
    assert bucket.visible.sum(-1).tolist() == [6 + 9, 9 + 9]


def test_bad_calls_are_refused_with_typed_errors():
    model = llama()
    decoder = GraphDecoder(model, max_len=16, buckets=(1, 2), capture=False)
    with pytest.raises(InvalidParameterError, match="before start"):
        decoder.step([1])
    with pytest.raises(InvalidParameterError, match="largest bucket"):
        decoder.start(random_prompts([3, 3, 3]))
    with pytest.raises(InvalidParameterError, match="no room"):
        decoder.start(random_prompts([16]))
    with pytest.raises(InvalidParameterError, match="at least one token"):
        decoder.start([[]])
    decoder.start(random_prompts([10, 4]))
    with pytest.raises(InvalidParameterError, match="needs 2 tokens"):
        decoder.step([5])
    for _ in range(6):
        decoder.step([5, 6])
    with pytest.raises(InvalidParameterError, match="full"):
        decoder.step([5, 6])
    with pytest.raises(InvalidParameterError):
        GraphDecoder(model, max_len=1, capture=False)
    with pytest.raises(InvalidParameterError):
        GraphDecoder(model, max_len=16, buckets=(0, 2), capture=False)


def test_capture_needs_a_cuda_model():
    with pytest.raises(KernelUnavailableError, match="CUDA"):
        GraphDecoder(llama(), max_len=16, capture=True)
    # On a CPU model the default is not to capture.
    assert GraphDecoder(llama(), max_len=16).capture is False


def test_unsupported_models_are_refused():
    with pytest.raises(IncompatibleModelError, match="model type"):
        GraphDecoder(tiny_model("Qwen2ForCausalLM"), max_len=16, capture=False)
    eager = tiny_model("LlamaForCausalLM", seed=1)
    eager.config._attn_implementation = "eager"
    with pytest.raises(IncompatibleModelError, match="sdpa"):
        GraphDecoder(eager, max_len=16, capture=False)
    with pytest.raises(IncompatibleModelError):
        GraphDecoder(torch.nn.Linear(2, 2), max_len=16, capture=False)


def ancestor_mask(parents: list[int]) -> torch.Tensor:
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i, parent in enumerate(parents):
        while parent >= 0:
            mask[i, parent] = True
            parent = parents[parent]
    return mask


def test_the_uncaptured_verify_step_computes_the_eager_tree_logits_and_commits_nothing():
    from transformers import DynamicCache

    from suffixspec.generation.batch import left_pad

    model = llama()
    prompts = random_prompts([7, 12], seed=5)
    decoder = GraphDecoder(model, max_len=64, node_buckets=(4, 8), capture=False)
    committed = [5, 9, 11]  # tokens fed by decode steps before the verification
    decoder.start(prompts)
    for token in committed:
        decoder.step([token, token + 1])
    parents = [-1, 0, 0, 1, 3]  # a 5-node tree: runs in the 8-node bucket with 3 padding nodes
    tree = ancestor_mask(parents).expand(2, 5, 5)
    tokens = torch.tensor([[40, 41, 42, 43, 44], [50, 51, 52, 53, 54]])
    got = decoder.verify(tokens, tree)

    # Eager: the same prefill and steps on a DynamicCache, then the tree block with a 4D mask.
    ids, mask = left_pad([np.asarray(p) for p in prompts], pad_id=0)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask).bool()
    positions = (mask_t.long().cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=ids_t, attention_mask=mask_t.long(), position_ids=positions, past_key_values=cache)
        next_pos = positions[:, -1:] + 1
        for token in committed:
            mask_t = torch.cat([mask_t, mask_t.new_ones((2, 1))], dim=1)
            step_ids = torch.tensor([[token], [token + 1]])
            model(
                input_ids=step_ids, attention_mask=mask_t.long(), position_ids=next_pos, past_key_values=cache
            )
            next_pos = next_pos + 1
        block_mask = torch.cat([mask_t[:, None, :].expand(2, 5, -1), tree], dim=-1)[:, None]
        depth = tree.sum(-1) - 1
        want = model(
            input_ids=tokens, attention_mask=block_mask, position_ids=next_pos + depth, past_key_values=cache
        ).logits
    assert got.shape == want.shape == (2, 5, model.config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The verification committed nothing: the next decode step is the one without it.
    after = decoder.step([7, 8])
    fresh = GraphDecoder(model, max_len=64, capture=False)
    fresh.start(prompts)
    for token in committed:
        fresh.step([token, token + 1])
    torch.testing.assert_close(after, fresh.step([7, 8]), rtol=0, atol=0)
    assert set(decoder._buckets[2].verifiers) == {8}


def test_bad_verify_calls_are_refused():
    model = llama()
    decoder = GraphDecoder(model, max_len=24, node_buckets=(4, 8), capture=False)
    tree = ancestor_mask([-1, 0]).expand(1, 2, 2)
    with pytest.raises(InvalidParameterError, match="before start"):
        decoder.verify(torch.tensor([[1, 2]]), tree)
    decoder.start(random_prompts([10]))
    with pytest.raises(InvalidParameterError, match="tree_mask"):
        decoder.verify(torch.tensor([[1, 2, 3]]), tree)
    with pytest.raises(InvalidParameterError, match="largest bucket"):
        decoder.verify(
            torch.ones((1, 9), dtype=torch.long), ancestor_mask(list(range(-1, 8))).expand(1, 9, 9)
        )
    for _ in range(11):
        decoder.step([3])
    with pytest.raises(InvalidParameterError, match="does not fit"):
        decoder.verify(torch.tensor([[1, 2]]), tree)  # 21 slots used + a 4-node bucket > 24
