"""Bad input to `suffixspec.generate` / the transformers hook raises a clear error before any work."""

from __future__ import annotations

import functools

import pytest
import torch

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
import suffixspec.hf  # noqa: E402
from suffixspec.errors import (  # noqa: E402
    DTypeError,
    IncompatibleModelError,
    InvalidParameterError,
    InvalidTokenError,
    KernelUnavailableError,
)

VOCAB = 64
MAX_POS = 48


@functools.cache
def llama_config() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=MAX_POS,
        eos_token_id=None,
    )


@functools.cache
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(llama_config()).eval()


PROMPT = [5, 6, 7, 8]


def assert_untouched(cache: suffixspec.SuffixCache) -> None:
    assert len(cache.active_requests) == 0
    assert len(cache.cached_requests) == 0


@pytest.mark.parametrize(
    ("input_ids", "error"),
    [
        ([], InvalidParameterError),
        ([PROMPT, []], InvalidParameterError),
        (torch.zeros((1, 0), dtype=torch.long), InvalidParameterError),
        ([5, VOCAB], InvalidTokenError),
        ([5, -1], InvalidTokenError),
        ([PROMPT, [1, 2, 10_000]], InvalidTokenError),
        (torch.tensor([[1.0, 2.0]]), DTypeError),
        ([1, 2.5], DTypeError),
        ("hello", DTypeError),
        (torch.zeros((1, 2, 3), dtype=torch.long), DTypeError),
        ([1] * (MAX_POS + 1), InvalidParameterError),
    ],
)
def test_bad_prompts(input_ids, error):
    cache = suffixspec.SuffixCache()
    with pytest.raises(error):
        suffixspec.generate(model(), input_ids, max_new_tokens=4, cache=cache)
    assert_untouched(cache)


def test_prompt_plus_new_tokens_beyond_the_maximum():
    with pytest.raises(InvalidParameterError, match="maximum"):
        suffixspec.generate(model(), [1] * 40, max_new_tokens=MAX_POS - 39)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=0),
        dict(max_new_tokens=-3),
        dict(max_new_tokens="5"),
        dict(do_sample=True, temperature=0.0),
        dict(do_sample=True, temperature=float("nan")),
        dict(do_sample=True, top_p=1.5),
        dict(do_sample=True, top_k=-1),
        dict(spec={"max_spec_tokens": 8}),
        dict(attention="bogus"),
        dict(do_sample=True, seed=1, generator=torch.Generator()),
        dict(do_sample=True, seed="x"),
        dict(streamer=object()),
        dict(cache="not a cache"),
        # issue 9 item 10: these raised builtins (TypeError, ValueError, AttributeError)
        dict(eos_token_id=1.0),
        dict(pad_token_id=1.0),
        dict(pad_token_id=[1]),
        dict(do_sample=True, seed=2**70),
        dict(generation_config={"max_new_tokens": 3}),
    ],
)
def test_bad_parameters(kwargs):
    kwargs.setdefault("max_new_tokens", 4)
    with pytest.raises(InvalidParameterError):
        suffixspec.generate(model(), PROMPT, **kwargs)


def test_bad_eos_id():
    # Ids beyond the vocabulary are tolerated as model.generate tolerates them (never emitted).
    with pytest.raises(InvalidTokenError):
        suffixspec.generate(model(), PROMPT, max_new_tokens=4, eos_token_id=-3)


def test_streamer_needs_batch_size_one():
    class Sink:
        def put(self, value):
            raise AssertionError("nothing may be streamed")

        def end(self):
            raise AssertionError("nothing may be streamed")

    with pytest.raises(InvalidParameterError, match="batch size 1"):
        suffixspec.generate(model(), [PROMPT, PROMPT], max_new_tokens=4, streamer=Sink())


def test_context_dependent_processors_are_refused():
    cache = suffixspec.SuffixCache()
    with pytest.raises(InvalidParameterError, match="RepetitionPenalty"):
        suffixspec.generate(
            model(),
            PROMPT,
            max_new_tokens=4,
            cache=cache,
            generation_config=transformers.GenerationConfig(repetition_penalty=1.3),
        )
    assert_untouched(cache)


def test_cuda_kernel_requested_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(KernelUnavailableError):
        suffixspec.generate(model(), PROMPT, max_new_tokens=4, attention="cuda")


def _base_model():
    torch.manual_seed(0)
    return transformers.LlamaModel(llama_config())


def _encoder_decoder():
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2, decoder_start_token_id=0
    )
    return transformers.T5ForConditionalGeneration(config)


def _recurrent():
    config = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, state_size=4)
    return transformers.MambaForCausalLM(config)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_base_model, "causal LM head"),
        (_encoder_decoder, "encoder-decoder"),
        (_recurrent, "rolled back|KV cache"),
        (lambda: torch.nn.Linear(2, 2), "not a transformers model"),
    ],
)
def test_incompatible_models(build, message):
    cache = suffixspec.SuffixCache()
    with pytest.raises(IncompatibleModelError, match=message):
        suffixspec.generate(build().eval(), PROMPT, max_new_tokens=4, cache=cache)
    assert_untouched(cache)


def test_hook_refuses_unsupported_stopping_criteria_and_outputs():
    ids = torch.tensor([PROMPT])
    hook = suffixspec.hf.generate

    class Never(transformers.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    criteria = transformers.StoppingCriteriaList([Never()])
    with pytest.raises(InvalidParameterError, match="Never"):
        model().generate(ids, max_new_tokens=4, custom_generate=hook, stopping_criteria=criteria)
    with pytest.raises(InvalidParameterError, match="output_scores"):
        model().generate(
            ids, max_new_tokens=4, custom_generate=hook, return_dict_in_generate=True, output_scores=True
        )
    with pytest.raises(InvalidParameterError):
        model().generate(ids, max_new_tokens=4, custom_generate=hook, spec="max_spec_tokens=-2")
