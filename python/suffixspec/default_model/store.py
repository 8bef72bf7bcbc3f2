"""The shipped default model: where its files are, checking them, and loading them.

The model directory (``data/`` beside this module) is an ordinary transformers checkpoint
(``save_pretrained`` of a ``LlamaForCausalLM`` and a ``PreTrainedTokenizerFast``) plus
``suffixspec_default_model.json``, which says how it was made (``tools/train_default_model.py``
in the repository, a fixed recipe) and holds the SHA-256 of every file, checked before loading.
So ``--model PATH`` and the default share one loading path, and the default is the same model,
with the same outputs, on every machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suffixspec.errors import ModelNotFoundError

__all__ = [
    "METADATA_FILE",
    "PROMPTS_FILE",
    "DefaultModelInfo",
    "default_model_dir",
    "format_quantity",
    "load_default_model",
    "quiet_transformers",
    "verify_default_model",
]

METADATA_FILE = "suffixspec_default_model.json"
PROMPTS_FILE = "demo_prompts.json"
_FORMAT_VERSION = 2


def default_model_dir() -> Path:
    """The shipped model's directory (inside the installed package)."""
    return Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class DefaultModelInfo:
    """Where the default model is and how it was made (the parsed metadata file)."""

    path: Path
    metadata: dict[str, Any]

    @property
    def parameters(self) -> int:
        return int(self.metadata["model"]["parameters"])

    def prompts(self) -> list[dict[str, str]]:
        """The demo prompts shipped with the model (``name``, ``text``)."""
        data = json.loads((self.path / PROMPTS_FILE).read_text(encoding="utf-8"))
        return list(data["prompts"])

    def describe(self) -> str:
        """One line for humans: what the model is and what it was trained on."""
        data, training = self.metadata["training_data"], self.metadata["training"]
        python = ".".join(str(data["python_version"]).split(".")[:2])
        tokens = format_quantity(data["tokens"])
        return (
            f"a {format_quantity(self.parameters)}-parameter Llama trained by suffixspec on "
            f"{format_quantity(data['bytes'])}B of code from the Python {python} standard library "
            f"({data['files']} files, {tokens} tokens) for {training['steps']} steps "
            f"(final loss {training['final_loss']:.2f}; shipped with suffixspec)"
        )


def format_quantity(value: float) -> str:
    """4_194_560 -> '4.2M', 19_552 -> '19.6k'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-shard progress bars while loading our tiny checkpoint."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def verify_default_model(model_dir: str | Path | None = None) -> DefaultModelInfo:
    """Reads the metadata and checks every listed file's SHA-256.

    Raises:
        ModelNotFoundError: the directory, its metadata or a file is missing, or a file's hash
            differs from the metadata's (a damaged or partial installation).
    """
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    try:
        metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(
            f"the default model's metadata is missing or unreadable ({path / METADATA_FILE}: {exc}); "
            "reinstall suffixspec, or pass --model PATH"
        ) from None
    if metadata.get("format") != "suffixspec-default-model" or metadata.get("version") != _FORMAT_VERSION:
        raise ModelNotFoundError(f"{path} holds no suffixspec default model of format {_FORMAT_VERSION}")
    for name, expected in metadata.get("files", {}).items():
        try:
            actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
        except OSError:
            raise ModelNotFoundError(
                f"the default model's file {path / name} is missing; reinstall suffixspec"
            ) from None
        if actual != expected:
            raise ModelNotFoundError(
                f"the default model's file {path / name} is damaged (SHA-256 {actual[:12]}..., expected "
                f"{expected[:12]}...); reinstall suffixspec"
            )
    return DefaultModelInfo(path, metadata)


def load_default_model(*, model_dir: str | Path | None = None) -> tuple[Any, Any, DefaultModelInfo]:
    """The default model (fp32, eval mode, on the CPU), its tokenizer and its description.

    Raises:
        ModelNotFoundError: see :func:`verify_default_model`.
    """
    info = verify_default_model(model_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(info.path, local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(info.path, local_files_only=True)
    return model, tokenizer, info
