"""The one way the command line loads a model: ``--model PATH`` (a local transformers causal LM
directory with its tokenizer) or, without it, the built-in default model. Used by ``suffixspec
demo`` and ``suffixspec serve``. torch and transformers load only when a model does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suffixspec.errors import ModelNotFoundError

__all__ = ["add_model_argument", "check_model_path", "load_local_model", "resolve_device"]


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="a local transformers causal LM directory (weights + tokenizer); default: the built-in model",
    )


def check_model_path(path: str) -> Path:
    """The directory of ``--model PATH``; a missing one is said before torch loads."""
    directory = Path(path).expanduser()
    if not directory.exists():
        raise ModelNotFoundError(f"--model {path}: no such file or directory")
    return directory


def load_local_model(path: str) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a local directory, without network access."""
    directory = check_model_path(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from suffixspec.default_model.store import quiet_transformers

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    return model, tokenizer


def resolve_device(name: str) -> Any:
    """``"auto"``: CUDA when available, else the CPU; otherwise the named torch device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
