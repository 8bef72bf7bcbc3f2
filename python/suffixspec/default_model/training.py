"""Training the default model: a byte-level BPE tokenizer and a small Llama, from a text corpus.

Plain PyTorch on the CPU (AdamW, warmup + cosine learning rate, fp32, fixed seed). Training stops
at ``steps`` or after ``max_seconds``, whichever comes first; the learning-rate schedule follows
whichever of the two is further along, so a slow (or busy) machine still ends on a decayed rate.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from suffixspec.default_model.corpus import Corpus
from suffixspec.errors import InvalidParameterError

__all__ = [
    "DEFAULT_CONFIG",
    "END_OF_TEXT",
    "TrainConfig",
    "TrainResult",
    "threads_for_load",
    "train_model",
    "train_tokenizer",
]

#: Separates training files; the model's BOS, EOS and padding token.
END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the default model. Changing a field changes the model."""

    # data: code without docstrings and comments (see corpus.strip_docs)
    corpus_bytes: int = 4_000_000
    code_only: bool = True
    vocab_size: int = 2048
    # architecture: small, because training is data-bound here (a few CPU minutes see ~1M tokens)
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    context: int = 512
    # optimisation
    steps: int = 320  # about 160 s on two idle cores; a busy machine stops at max_seconds
    batch_size: int = 8
    lr: float = 4e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_seconds: float = 210.0
    seed: int = 0

    def llama_config(self, end_of_text_id: int) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.context,
            tie_word_embeddings=True,
            bos_token_id=end_of_text_id,
            eos_token_id=end_of_text_id,
            pad_token_id=end_of_text_id,
        )


#: The built-in default: ~1M parameters, at most three and a half minutes of training.
DEFAULT_CONFIG = TrainConfig()


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    final_loss: float  # mean training loss over the last steps (each token is seen about once)
    seconds: float
    stopped_by_time: bool
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)  # torch CPU threads used, as they changed


def train_tokenizer(corpus: Corpus, vocab_size: int, *, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text round-trips) trained on ``corpus``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus.texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=max_length,
    )


def token_stream(corpus: Corpus, tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """All files tokenized and concatenated, each followed by the end-of-text token."""
    eot = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    encoded = tokenizer.backend_tokenizer.encode_batch(list(corpus.texts), add_special_tokens=False)
    return torch.tensor([token for enc in encoded for token in [*enc.ids, eot]], dtype=torch.long)


def threads_for_load(limit: int, *, own_threads: float = 0.0) -> int:
    """CPU threads for torch that leave the cores other processes keep busy.

    OpenMP workers that spin against other busy processes make small-matrix work an order of
    magnitude slower (measured: 2 threads 8x slower than 1 on two busy cores), so use only the
    idle cores by the 1-minute load average, less ``own_threads`` (our own share of it).
    """
    try:
        others = os.getloadavg()[0] - own_threads
    except (AttributeError, OSError):  # no load average on this platform
        return limit
    cores = os.cpu_count() or limit
    return max(1, min(limit, cores - round(max(others, 0.0))))


def _lr_factor(progress: float, step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def _windows(tokens: torch.Tensor, context: int) -> torch.Tensor:
    count = (len(tokens) - 1) // context
    if count < 1:
        raise InvalidParameterError(f"corpus too small: {len(tokens)} tokens for a context of {context}")
    return tokens[: count * context].view(count, context)


def train_model(
    tokens: torch.Tensor, config: TrainConfig, end_of_text_id: int, *, progress: bool = True
) -> tuple[LlamaForCausalLM, TrainResult]:
    """Train a fresh Llama on ``tokens`` (one stream, cut into shuffled context-sized windows)."""
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(config.llama_config(end_of_text_id))
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    windows = _windows(tokens, config.context)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(windows), generator=generator)
    cursor = 0

    recent: list[float] = []
    result = TrainResult(steps=0, final_loss=float("nan"), seconds=0.0, stopped_by_time=False)
    thread_limit = torch.get_num_threads()
    threads = thread_limit  # chosen at step 0, when none of the load is ours yet
    start = time.perf_counter()
    bar = tqdm(total=config.steps, desc="training the default model", unit="step", disable=not progress)
    try:
        for step in range(config.steps):
            elapsed = time.perf_counter() - start
            if elapsed >= config.max_seconds:
                result.stopped_by_time = True
                break
            if step % 20 == 0:  # the machine's load changes; our share of the average ramps up over a minute
                threads = threads_for_load(thread_limit, own_threads=threads * (1 - math.exp(-elapsed / 60)))
                torch.set_num_threads(threads)
                if not result.threads or result.threads[-1] != threads:
                    result.threads.append(threads)
            progress_fraction = max(step / config.steps, elapsed / config.max_seconds)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(progress_fraction, step, config)
            if cursor + config.batch_size > len(order):  # next epoch
                order, cursor = torch.randperm(len(windows), generator=generator), 0
            batch = windows[order[cursor : cursor + config.batch_size]]
            cursor += config.batch_size

            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()

            value = float(loss.detach())
            recent = [*recent[-19:], value]
            result.steps = step + 1
            if step % 10 == 0 or step + 1 == config.steps:
                result.loss_curve.append((step + 1, round(value, 4)))
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        torch.set_num_threads(thread_limit)
    result.seconds = time.perf_counter() - start
    result.final_loss = sum(recent) / len(recent) if recent else float("nan")
    model.eval()
    return model, result
