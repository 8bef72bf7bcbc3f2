"""Greedy speculative generation equals plain `model.generate`, token for token."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
import suffixspec.hf  # noqa: E402
from suffixspec.generation import Proposer  # noqa: E402

VOCAB = 128
NEW = 32


@functools.cache
def tiny_model(kind: str) -> torch.nn.Module:
    """A 2-layer random-weight causal LM (fp32, CPU)."""
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=None,  # tests choose their EOS explicitly
    )
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    elif kind == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=16))
    elif kind == "mistral-sliding":  # every layer sliding, window shorter than the prompts
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common, sliding_window=8))
    elif kind == "gemma2":  # alternating sliding/full layers: a per-layer-type mask mapping
        model = transformers.Gemma2ForCausalLM(
            transformers.Gemma2Config(**common, head_dim=16, sliding_window=8)
        )
    elif kind == "gpt2":  # learned absolute positions, fused QKV
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(
                vocab_size=VOCAB,
                n_embd=64,
                n_layer=2,
                n_head=4,
                n_positions=256,
                bos_token_id=1,
                eos_token_id=None,
            )
        )
    elif kind == "llama-eager":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, attn_implementation="eager"))
    else:
        raise ValueError(kind)
    return model.eval()


ARCHS = ["llama", "qwen3", "mistral-sliding", "gemma2", "gpt2", "llama-eager"]


def prompts_of(lengths, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def plain(model, prompt, new=NEW, **kw):
    """`model.generate` greedy output (generated ids only) for one prompt."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, **kw)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("kind", ARCHS)
def test_single_request_matches_generate_cold_and_warm(kind):
    model = tiny_model(kind)
    (prompt,) = prompts_of([24])
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False)
    cache = suffixspec.SuffixCache()
    cold = suffixspec.generate(model, torch.tensor([prompt]), max_new_tokens=NEW, cache=cache)
    warm = suffixspec.generate(model, torch.tensor([prompt]), max_new_tokens=NEW, cache=cache)
    assert torch.equal(cold.sequences, ref)
    assert torch.equal(warm.sequences, ref)
    # The second run drafts from the first one's cached response: most drafts are accepted.
    stats = warm.stats[0]
    assert stats.accepted_tokens > NEW // 2
    assert stats.tokens_per_step > 1.5
    assert stats.steps < cold.stats[0].steps


@pytest.mark.parametrize("kind", ["llama", "gemma2", "gpt2"])
def test_ragged_batch_matches_per_request_and_batched_generate(kind):
    model = tiny_model(kind)
    prompts = prompts_of([5, 19, 11, 30])
    cache = suffixspec.SuffixCache()
    # Warm the cache for two of the four prompts only: rows accept different amounts.
    suffixspec.generate(model, [prompts[1], prompts[2]], max_new_tokens=NEW, cache=cache)
    out = suffixspec.generate(model, prompts, max_new_tokens=NEW, cache=cache, pad_token_id=0)
    assert out.generated == [plain(model, p) for p in prompts]
    assert out.stats[1].tokens_per_step > 1.5 and out.stats[2].tokens_per_step > 1.5

    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(out.sequences, ref)


def first_occurrence_eos(generated, start):
    """A token of `generated` whose first occurrence is at index >= `start`."""
    for i in range(start, len(generated)):
        if generated[i] not in generated[:i]:
            return i, generated[i]
    raise AssertionError("no fresh token to use as EOS")


def test_eos_inside_accepted_path_stops_there_and_pads():
    model = tiny_model("llama")
    prompts = prompts_of([16, 9])
    refs = [plain(model, p, new=48) for p in prompts]
    stop_at, eos = first_occurrence_eos(refs[0], 6)
    cache = suffixspec.SuffixCache()
    suffixspec.generate(model, prompts, max_new_tokens=48, cache=cache)
    out = suffixspec.generate(
        model, prompts, max_new_tokens=48, cache=cache, eos_token_id=eos, pad_token_id=0
    )
    assert out.generated[0] == refs[0][: stop_at + 1]
    assert out.stats[0].finish_reason == "eos"
    # The EOS token was emitted by a step that had accepted draft tokens before it.
    assert out.stats[0].tokens_per_step > 1.5
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (ids != 0).long()
    ref = model.generate(
        ids, attention_mask=mask, max_new_tokens=48, do_sample=False, eos_token_id=eos, pad_token_id=0
    )
    assert torch.equal(out.sequences, ref)


@pytest.mark.parametrize("new", [1, 2, 13, 21])
def test_max_new_tokens_inside_accepted_path(new):
    model = tiny_model("llama")
    (prompt,) = prompts_of([20], seed=3)
    cache = suffixspec.SuffixCache()
    suffixspec.generate(model, [prompt], max_new_tokens=40, cache=cache)
    out = suffixspec.generate(model, [prompt], max_new_tokens=new, cache=cache)
    assert out.generated[0] == plain(model, prompt, new=new)
    assert out.stats[0].new_tokens == new
    if new > 2:
        assert max(out.stats[0].accepted_per_step) > 1


class BranchyProposer(Proposer):
    """Trees built around the known greedy continuation: at each depth a wrong sibling comes
    before the right token, the right chain is cut short now and then and ends in a wrong
    leaf, so acceptance follows non-first children and rows accept different amounts."""

    def __init__(self, refs: dict[tuple[int, ...], list[int]], depth: int = 6):
        self.refs = refs
        self.depth = depth
        self.seqs: dict[object, list[int]] = {}
        self.calls = 0

    def start(self, req_id, prompt):
        self.seqs[req_id] = self.refs[tuple(int(t) for t in prompt)]

    def extend(self, req_id, tokens):
        pass

    def finish(self, req_id):
        del self.seqs[req_id]

    def propose(self, req_ids, contexts, budgets, max_depths):
        self.calls += 1
        trees = []
        for req, ctx, budget in zip(req_ids, contexts, budgets, strict=True):
            truth = self.seqs[req][len(ctx) :]
            keep = min(len(truth), self.depth, (self.calls + len(ctx)) % (self.depth + 1))
            tokens, parents, prev = [], [], -1
            for i in range(keep):
                tokens += [(truth[i] + 1) % VOCAB, truth[i]]
                parents += [prev, prev]
                prev = len(tokens) - 1
            if keep:
                tokens.append(
                    (truth[keep - 1] + 7) % VOCAB if keep >= len(truth) else (truth[keep] + 3) % VOCAB
                )
                parents.append(prev)
            tokens, parents = tokens[:budget], parents[:budget]
            trees.append(suffixspec.TokenTree(np.asarray(tokens, np.int32), np.asarray(parents, np.int32)))
        return trees


@pytest.mark.parametrize("kind", ["llama", "mistral-sliding", "gemma2"])
def test_branchy_trees_with_ragged_acceptance(kind):
    model = tiny_model(kind)
    prompts = prompts_of([7, 22, 13])
    refs = {tuple(p): p + plain(model, p, new=48) for p in prompts}
    proposer = BranchyProposer(refs)
    out = suffixspec.generate(model, prompts, max_new_tokens=48, proposer=proposer)
    assert out.generated == [refs[tuple(p)][len(p) :] for p in prompts]
    for stats in out.stats:
        assert stats.accepted_tokens > 0 and stats.steps < 48


def test_streamer_gets_prompt_then_exactly_the_generated_tokens():
    model = tiny_model("llama")
    (prompt,) = prompts_of([12])

    class Collect:
        def __init__(self):
            self.puts, self.ended = [], 0

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.ended += 1

    cache = suffixspec.SuffixCache()
    suffixspec.generate(model, [prompt], max_new_tokens=NEW, cache=cache)
    streamer = Collect()
    out = suffixspec.generate(model, [prompt], max_new_tokens=NEW, cache=cache, streamer=streamer)
    assert streamer.puts[0] == [prompt]
    assert [t for chunk in streamer.puts[1:] for t in chunk] == out.generated[0]
    assert len(streamer.puts) - 1 < NEW  # several tokens per put: speculation happened
    assert streamer.ended == 1


def test_text_streamer_prints_the_decoded_output(capsys):
    tokenizers = pytest.importorskip("tokenizers")
    model = tiny_model("llama")
    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    (prompt,) = prompts_of([10])
    streamer = transformers.TextStreamer(hf_tok, skip_prompt=True)
    out = suffixspec.generate(model, [prompt], max_new_tokens=NEW, streamer=streamer)
    printed = capsys.readouterr().out
    assert printed.split() == hf_tok.decode(out.generated[0]).split()


def test_inputs_as_tensor_list_and_nested_lists_agree():
    model = tiny_model("llama")
    (prompt,) = prompts_of([15])
    a = suffixspec.generate(model, torch.tensor([prompt]), max_new_tokens=8)
    b = suffixspec.generate(model, prompt, max_new_tokens=8)
    c = suffixspec.generate(model, [prompt], max_new_tokens=8)
    d = suffixspec.generate(model, np.asarray(prompt), max_new_tokens=8)
    assert a.generated == b.generated == c.generated == d.generated
    assert torch.equal(a.sequences, b.sequences)


def test_defaults_come_from_generation_config():
    model = tiny_model("llama")
    (prompt,) = prompts_of([10], seed=5)
    ref = plain(model, prompt, new=40)
    _, eos = first_occurrence_eos(ref, 5)
    old = (model.generation_config.eos_token_id, model.generation_config.max_new_tokens)
    model.generation_config.eos_token_id, model.generation_config.max_new_tokens = eos, 40
    try:
        out = suffixspec.generate(model, [prompt])
        expected = model.generate(torch.tensor([prompt]), do_sample=False)
    finally:
        model.generation_config.eos_token_id, model.generation_config.max_new_tokens = old
    assert out.generated[0][-1] == eos
    assert torch.equal(out.sequences, expected)


def test_finished_responses_enter_the_cache():
    model = tiny_model("llama")
    (prompt,) = prompts_of([12], seed=7)
    cache = suffixspec.SuffixCache()
    out = suffixspec.generate(model, [prompt], max_new_tokens=20, cache=cache)
    # A different request whose context ends like the first response drafts from it.
    tail = out.generated[0][:10]
    cache.start_request("probe", prompts_of([3], seed=8)[0])
    draft = cache.speculate("probe", tail[:6], max_spec_tokens=4)
    cache.stop_request("probe")
    assert list(draft.token_ids[:2]) == tail[6:8]


def padded_batch(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_transformers_hook_matches_generate(kind):
    model = tiny_model(kind)
    ids, mask = padded_batch(prompts_of([9, 17, 4]))
    kw = dict(attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    ref = model.generate(ids, **kw)
    cache = suffixspec.SuffixCache()
    outputs = []
    hook = suffixspec.hf.generate
    cold = model.generate(ids, **kw, custom_generate=hook, suffix_cache=cache, on_output=outputs.append)
    warm = model.generate(ids, **kw, custom_generate=hook, suffix_cache=cache, on_output=outputs.append)
    assert torch.equal(cold, ref)
    assert torch.equal(warm, ref)
    assert all(s.tokens_per_step > 1.5 for s in outputs[1].stats)
    as_dict = model.generate(ids, **kw, custom_generate=hook, return_dict_in_generate=True)
    assert torch.equal(as_dict.sequences, ref)


def test_transformers_hook_streams_through_the_generate_streamer():
    model = tiny_model("llama")
    (prompt,) = prompts_of([11])
    puts, ends = [], []

    class Collect:
        def put(self, value):
            puts.append(value.tolist())

        def end(self):
            ends.append(True)

    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=NEW,
        do_sample=False,
        custom_generate=suffixspec.hf.generate,
        streamer=Collect(),
    )
    assert puts[0] == [prompt]  # streamed once, by model.generate itself
    assert [t for chunk in puts[1:] for t in chunk] == out[0, len(prompt) :].tolist()
    assert ends == [True]


def test_transformers_hook_samples_reproducibly_with_a_seed():
    model = tiny_model("llama")
    ids = torch.tensor(prompts_of([8]))
    kw = dict(max_new_tokens=12, do_sample=True, top_k=20, custom_generate=suffixspec.hf.generate)
    a = model.generate(ids, **kw, seed=3)
    b = model.generate(ids, **kw, seed=3)
    c = suffixspec.generate(model, ids, max_new_tokens=12, do_sample=True, top_k=20, seed=3)
    assert torch.equal(a, b)
    assert torch.equal(a, c.sequences)


def test_kernels_torch_tree_attention_path_matches():
    """attention="torch": verification through suffixspec.kernels' tree attention (reference path)."""
    model = tiny_model("llama")
    prompts = prompts_of([7, 22, 13])
    refs = {tuple(p): p + plain(model, p, new=40) for p in prompts}
    out = suffixspec.generate(
        model, prompts, max_new_tokens=40, proposer=BranchyProposer(refs), attention="torch"
    )
    assert out.generated == [refs[tuple(p)][len(p) :] for p in prompts]
    assert all(s.accepted_tokens > 0 for s in out.stats)


@pytest.mark.parametrize(("min_match_len", "expected"), [(1, [9, 8]), (2, [])])
def test_suffix_proposer_drops_drafts_from_short_matches(min_match_len, expected):
    from suffixspec.generation import SuffixProposer
    from suffixspec.generation.config import SpecConfig

    cache = suffixspec.SuffixCache()
    spec = SpecConfig(max_spec_factor=4.0, min_match_len=min_match_len, drafter="arctic")
    proposer = SuffixProposer(cache, spec)
    proposer.start("r", np.asarray([1, 2, 3, 9, 8], dtype=np.int32))
    # The context ends in "5 3": only its last token matches the prompt.
    (tree,) = proposer.propose(["r"], [np.asarray([7, 5, 3], dtype=np.int32)], [8], [8])
    proposer.finish("r")
    assert list(tree.token_ids) == expected
