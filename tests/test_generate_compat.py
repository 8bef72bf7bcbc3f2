"""The transformers compatibility layer (`suffixspec.generation.compat`): the supported versions'
KV cache keyword, no process-wide state, threads sharing one model."""

from __future__ import annotations

import functools
import inspect
import threading

import pytest
import torch

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
import suffixspec.hf  # noqa: E402
from suffixspec import kernels  # noqa: E402
from suffixspec.generation.compat import inspect_model, original_attn_implementation  # noqa: E402
from tiny_models import plain_greedy_tokens, random_prompts, tiny_model  # noqa: E402

NEW = 20


def llama():
    return tiny_model("LlamaForCausalLM")


def prompts_of(lengths, seed=0):
    return random_prompts(lengths, seed)


def plain(model, prompt, new=NEW):
    return plain_greedy_tokens(model, prompt, new)


def test_the_kv_cache_goes_under_the_forward_signatures_own_name():
    model = llama()
    params = inspect.signature(model.forward).parameters
    info = inspect_model(model)
    assert info.cache_kwarg in params  # "cache" from transformers 5.24, "past_key_values" before
    seen = []
    forward = model.forward

    @functools.wraps(forward)
    def recording_forward(*args, **kwargs):
        seen.append(sorted(k for k in kwargs if k in ("cache", "past_key_values")))
        return forward(*args, **kwargs)

    model.forward = recording_forward
    try:
        suffixspec.generate(model, prompts_of([9]), max_new_tokens=6)
    finally:
        del model.forward
    assert seen and all(keys == [info.cache_kwarg] for keys in seen)


def test_concurrent_generate_calls_on_one_model_do_not_interfere():
    """Two threads verify trees through the attention switch while a third decodes plainly."""
    model = llama()
    prompts = prompts_of([7, 15, 11], seed=1)
    refs = [plain(model, p) for p in prompts]
    barrier = threading.Barrier(3)
    outputs: dict[str, list] = {"a": [], "b": [], "plain": []}
    errors: list[BaseException] = []

    def speculative(key):
        try:
            barrier.wait()
            cache = suffixspec.SuffixCache()
            for _ in range(4):
                out = suffixspec.generate(
                    model, prompts, max_new_tokens=NEW, cache=cache, attention="torch", pad_token_id=0
                )
                outputs[key].append(out.generated)
        except BaseException as exc:
            errors.append(exc)

    def plain_decoding():
        try:
            barrier.wait()
            for _ in range(4):
                outputs["plain"].append([plain(model, p) for p in prompts])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=speculative, args=(k,)) for k in "ab"]
    threads.append(threading.Thread(target=plain_decoding))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(len(runs) == 4 and all(r == refs for r in runs) for runs in outputs.values())
    assert model.config._attn_implementation == "sdpa"


def test_nested_attention_contexts_share_one_switch():
    model = llama()
    with kernels.attention_context(model, "torch"):
        switched = model.config._attn_implementation
        assert switched != "sdpa" and original_attn_implementation(model) == "sdpa"
        with kernels.attention_context(model, "torch"):
            assert model.config._attn_implementation == switched
        assert model.config._attn_implementation == switched  # the outer one still runs
        # A model mid-switch is still inspected as what it is.
        assert kernels.resolve_mode(model, "torch") == "torch"
    assert model.config._attn_implementation == "sdpa"


def test_custom_generate_hook_under_this_transformers():
    model = llama()
    ids = torch.tensor(prompts_of([10], seed=2))
    ref = model.generate(ids, max_new_tokens=NEW, do_sample=False)
    out = model.generate(ids, max_new_tokens=NEW, do_sample=False, custom_generate=suffixspec.hf.generate)
    assert torch.equal(out, ref)
