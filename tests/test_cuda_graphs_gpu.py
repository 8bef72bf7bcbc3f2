"""CUDA-graph decode steps on a GPU (marker ``gpu``; skipped without CUDA): the replayed graph
computes the logits of the same step run eagerly, and greedy decoding through it equals plain
`model.generate` (exactly in fp32; within the project's one near-tie criterion in fp16)."""

from __future__ import annotations

import pytest
import torch

from exactness import check_greedy_exactness
from suffixspec.generation.cuda_graphs import GraphDecoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tiny_llama(dtype: torch.dtype):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
    with torch.no_grad():  # well separated logits: greedy choices are robust to rounding
        model.lm_head.weight.mul_(8.0)
    return model.to("cuda", dtype).eval()


def prompts(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 256, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_replayed_steps_equal_the_same_steps_run_eagerly(dtype):
    model = tiny_llama(dtype)
    batch = prompts([40, 13, 70])
    graphs = GraphDecoder(model, max_len=160, buckets=(4,), capture=True)
    eager = GraphDecoder(model, max_len=160, buckets=(4,), capture=False)
    assert graphs.captured_buckets == (4,) and eager.captured_buckets == ()
    got, want = graphs.start(batch), eager.start(batch)
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # prefill is eager in both
    for _ in range(24):
        token = want.argmax(-1)
        got, want = graphs.step(token), eager.step(token)
        # The same kernels on the same buffers: the replay reproduces the eager step bit for bit.
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_greedy_decoding_equals_model_generate(dtype):
    model = tiny_llama(dtype)
    decoder = GraphDecoder(model, max_len=192, buckets=(1, 2, 4), capture=True)

    def run(batch, new):
        return decoder.greedy(batch, new)

    for batch in (prompts([40]), prompts([40, 13, 70], seed=1)):
        report = check_greedy_exactness(model, batch, run, 48, pad_token_id=0)
        report.assert_ok()
        if dtype == torch.float32:
            assert report.departures == []
    assert decoder.captured_buckets == (1, 4)


def test_graph_decoding_is_reused_across_batches_of_one_bucket():
    model = tiny_llama(torch.float32)
    decoder = GraphDecoder(model, max_len=128, buckets=(2,), capture=True)
    first = prompts([30, 9], seed=2)
    a = decoder.greedy(first, 20)
    graph = decoder._buckets[2].graph
    decoder.greedy(prompts([60, 5], seed=3), 20)
    assert decoder.greedy(first, 20) == a and decoder._buckets[2].graph is graph


def chain_tree(batch: int, nodes: int) -> torch.Tensor:
    parents = [-1] + [0 if i <= 4 else i - 4 for i in range(1, nodes)]
    mask = torch.eye(nodes, dtype=torch.bool)
    for i, parent in enumerate(parents):
        while parent >= 0:
            mask[i, parent] = True
            parent = parents[parent]
    return mask.expand(batch, nodes, nodes).cuda()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_replayed_verification_equals_the_eager_step_and_commits_nothing(dtype):
    model = tiny_llama(dtype)
    batch = prompts([40, 13, 70], seed=4)
    graphs = GraphDecoder(model, max_len=256, buckets=(4,), node_buckets=(16, 64), capture=True)
    eager = GraphDecoder(model, max_len=256, buckets=(4,), node_buckets=(16, 64), capture=False)
    for decoder in (graphs, eager):
        decoder.start(batch)
        decoder.step(torch.tensor([5, 6, 7]))
    gen = torch.Generator(device="cuda").manual_seed(0)
    for nodes in (9, 64):  # a padded 16-node bucket, then a full 64-node one
        tokens = torch.randint(3, 256, (3, nodes), generator=gen, device="cuda")
        got = graphs.verify(tokens, chain_tree(3, nodes))
        want = eager.verify(tokens, chain_tree(3, nodes))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert graphs.captured_verifiers == ((4, 16), (4, 64)) and eager.captured_verifiers == ()
    # The committed state is untouched: the next decode steps agree with a decoder that never verified.
    fresh = GraphDecoder(model, max_len=256, buckets=(4,), capture=True)
    fresh.start(batch)
    fresh.step(torch.tensor([5, 6, 7]))
    torch.testing.assert_close(graphs.step(torch.tensor([8, 9, 10])), fresh.step(torch.tensor([8, 9, 10])))
