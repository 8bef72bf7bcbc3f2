"""Training the default model: a byte-level BPE tokenizer and a small Llama, from a text corpus.

Plain PyTorch on the CPU (AdamW, warmup + cosine learning rate, fp32, fixed seed, one torch thread).
A run is reproducible: the same recipe, corpus and torch version give the same weights on any
machine, however busy (a fixed number of steps, no time limit; one thread so that no reduction
order depends on the core count).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from default_model.corpus import Corpus

__all__ = [
    "DEFAULT_CONFIG",
    "END_OF_TEXT",
    "TrainConfig",
    "TrainResult",
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
    steps: int = 320  # about 3 minutes on one idle core
    batch_size: int = 8
    lr: float = 4e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
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


#: The built-in default: ~1M parameters, a few minutes of training.
DEFAULT_CONFIG = TrainConfig()


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    final_loss: float  # mean training loss over the last steps (each token is seen about once)
    seconds: float
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


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


def _lr_factor(progress: float, step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def _windows(tokens: torch.Tensor, context: int) -> torch.Tensor:
    count = (len(tokens) - 1) // context
    if count < 1:
        raise ValueError(f"corpus too small: {len(tokens)} tokens for a context of {context}")
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
    result = TrainResult(steps=0, final_loss=float("nan"), seconds=0.0)
    thread_limit = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    bar = tqdm(total=config.steps, desc="training the default model", unit="step", disable=not progress)
    try:
        for step in range(config.steps):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step / config.steps, step, config)
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
