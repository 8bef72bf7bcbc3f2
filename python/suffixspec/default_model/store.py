"""The cached default model: where it lives, building it once, and loading it.

The model directory is an ordinary transformers checkpoint (``save_pretrained`` of the model and
of a ``PreTrainedTokenizerFast``) plus ``suffixspec_default_model.json`` describing how it was
made, so ``--model PATH`` loading and the default share one code path. A build writes into a
temporary sibling directory and renames it into place, so an interrupted build never leaves a
half-written model; an exclusive lock file keeps two processes from training at the same time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suffixspec.default_model.corpus import build_corpus
from suffixspec.default_model.training import (
    DEFAULT_CONFIG,
    TrainConfig,
    token_stream,
    train_model,
    train_tokenizer,
)
from suffixspec.errors import ModelNotFoundError

try:  # POSIX; elsewhere builds are not serialized
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "METADATA_FILE",
    "DefaultModelInfo",
    "default_model_dir",
    "format_quantity",
    "load_default_model",
    "quiet_transformers",
    "train_default_model",
]

#: Bump the suffix when the recipe changes so old caches are not mistaken for the new model.
_DIR_NAME = "default-model-v1"
METADATA_FILE = "suffixspec_default_model.json"
_FORMAT_VERSION = 1


def default_model_dir() -> Path:
    """``${SUFFIXSPEC_CACHE_DIR:-~/.cache/suffixspec}/default-model-v1``."""
    root = os.environ.get("SUFFIXSPEC_CACHE_DIR") or Path.home() / ".cache" / "suffixspec"
    return Path(root).expanduser() / _DIR_NAME


@dataclass(frozen=True)
class DefaultModelInfo:
    """Where the default model is and how it was made (the parsed metadata file)."""

    path: Path
    metadata: dict[str, Any]

    @property
    def parameters(self) -> int:
        return int(self.metadata["model"]["parameters"])

    def describe(self) -> str:
        """One line for humans: what the model is, what it was trained on, where it is cached."""
        data, training = self.metadata["training_data"], self.metadata["training"]
        python = ".".join(str(data["python_version"]).split(".")[:2])
        tokens = format_quantity(data["tokens"])
        return (
            f"a {format_quantity(self.parameters)}-parameter Llama trained by suffixspec on "
            f"{format_quantity(data['bytes'])}B of code from the Python {python} standard library "
            f"({data['files']} files, {tokens} tokens) for {training['steps']} steps "
            f"(final loss {training['final_loss']:.2f}, {training['seconds']:.0f} s; cached at {self.path})"
        )


def format_quantity(value: float) -> str:
    """4_194_560 -> '4.2M', 19_552 -> '19.6k'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-shard progress bars while saving or loading our tiny checkpoint."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _read_metadata(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):  # a damaged file: rebuild like a missing one
        return None


@contextlib.contextmanager
def _build_lock(model_dir: Path, *, progress: bool) -> Iterator[None]:
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(model_dir.parent / f"{model_dir.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"suffixspec: waiting for another process building {model_dir}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_temporaries(model_dir: Path) -> None:
    """Leftovers of interrupted builds (only the lock holder writes temporaries)."""
    for stale in model_dir.parent.glob(f".{model_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(model_dir: Path, config: TrainConfig, corpus_root: Path | None, progress: bool) -> None:
    corpus = build_corpus(config.corpus_bytes, root=corpus_root, code_only=config.code_only, seed=config.seed)
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus, config.vocab_size, max_length=config.context)
    tokens = token_stream(corpus, tokenizer)
    end_of_text = tokenizer.eos_token_id
    model, result = train_model(tokens, config, end_of_text, progress=progress)
    if progress:
        limit = f" (the {config.max_seconds:.0f} s time limit came first)" if result.stopped_by_time else ""
        print(
            f"suffixspec: trained {result.steps} of {config.steps} steps in {result.seconds:.0f} s{limit}; "
            f"final loss {result.final_loss:.2f}",
            file=sys.stderr,
        )

    import torch
    import transformers

    metadata = {
        "format": "suffixspec-default-model",
        "version": _FORMAT_VERSION,
        "model": {
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "recipe": dataclasses.asdict(config),
        },
        "training_data": {
            "source": "Python standard library sources (.py)"
            + (", docstrings and comments removed" if config.code_only else ""),
            "python_version": platform.python_version(),
            "root": str(corpus.root),
            "files": len(corpus.files),
            "bytes": corpus.num_bytes,
            "tokens": len(tokens),
            "sha256": corpus.fingerprint(),
            "file_list": list(corpus.files),
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": len(tokenizer)},
        "training": {
            "steps": result.steps,
            "planned_steps": config.steps,
            "stopped_by_time": result.stopped_by_time,
            "final_loss": result.final_loss,
            "seconds": round(result.seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "loss_curve": result.loss_curve,
            "torch_threads": result.threads,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    staging = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}.tmp-"))
    try:
        with quiet_transformers():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        # Written last: a directory with metadata is a complete model.
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        if model_dir.exists():  # an explicit rebuild replaces the old model
            retired = Path(tempfile.mkdtemp(dir=model_dir.parent, prefix=f".{model_dir.name}.tmp-"))
            model_dir.rename(retired / "old")
            staging.rename(model_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train_default_model(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    steps: int | None = None,
    max_seconds: float | None = None,
    config: TrainConfig = DEFAULT_CONFIG,
    corpus_root: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> DefaultModelInfo:
    """Train the default model into ``out_dir`` (default :func:`default_model_dir`), replacing
    any model there.

    ``steps`` and ``max_seconds`` override those of ``config``; ``corpus_root`` replaces the
    standard library as the source of ``.py`` files (tests use a tiny one).
    """
    model_dir = Path(out_dir) if out_dir is not None else default_model_dir()
    overrides = {k: v for k, v in (("steps", steps), ("max_seconds", max_seconds)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    root = Path(corpus_root) if corpus_root is not None else None
    with _build_lock(model_dir, progress=progress):
        _remove_stale_temporaries(model_dir)
        _build(model_dir, config, root, progress)
    return DefaultModelInfo(model_dir, _read_metadata(model_dir) or {})


def _current_metadata(model_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The metadata of a complete model built by ``config``'s recipe (else None)."""
    metadata = _read_metadata(model_dir)
    if metadata is None or metadata.get("version") != _FORMAT_VERSION:
        return None
    return metadata if metadata.get("model", {}).get("recipe") == dataclasses.asdict(config) else None


def load_default_model(
    train_if_missing: bool = True,
    progress: bool = True,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    config: TrainConfig = DEFAULT_CONFIG,
    corpus_root: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any, DefaultModelInfo]:
    """The default model (in eval mode, on the CPU), its tokenizer and its description.

    Trains and caches it first (minutes, once) if it is missing, or was built by another recipe
    than ``config`` (an older suffixspec), and ``train_if_missing``.

    Raises:
        ModelNotFoundError: the model is missing or outdated and ``train_if_missing`` is false,
            or it cannot be built on this installation.
    """
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    metadata = _current_metadata(path, config)
    if metadata is None:
        outdated = _read_metadata(path) is not None
        if not train_if_missing:
            state = "was built by another version of suffixspec" if outdated else "is not built yet"
            raise ModelNotFoundError(
                f"the default model {state} (looked in {path}); run without --no-train to train it "
                "once (a few minutes on 2 CPU cores), or pass --model PATH"
            )
        with _build_lock(path, progress=progress):
            metadata = _current_metadata(path, config)  # built meanwhile by the process we waited for?
            if metadata is None:
                _remove_stale_temporaries(path)
                if progress:
                    what = "rebuilding the outdated" if outdated else "training the"
                    print(
                        f"suffixspec: {what} default model once (a few minutes; cached in {path})",
                        file=sys.stderr,
                    )
                root = Path(corpus_root) if corpus_root is not None else None
                _build(path, config, root, progress)
                metadata = _read_metadata(path) or {}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, DefaultModelInfo(path, metadata)
