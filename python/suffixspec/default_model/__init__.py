"""The built-in default model: a small Llama that suffixspec trains itself, once, on the Python
standard library's sources (no model hub needed), cached under
``${SUFFIXSPEC_CACHE_DIR:-~/.cache/suffixspec}/default-model-v1``.

>>> model, tokenizer, info = load_default_model()  # doctest: +SKIP
>>> print(info.describe())  # doctest: +SKIP
"""

from suffixspec.default_model.corpus import Corpus, build_corpus, stdlib_dir, strip_docs
from suffixspec.default_model.store import (
    METADATA_FILE,
    DefaultModelInfo,
    default_model_dir,
    load_default_model,
    train_default_model,
)
from suffixspec.default_model.training import DEFAULT_CONFIG, TrainConfig

__all__ = [
    "DEFAULT_CONFIG",
    "METADATA_FILE",
    "Corpus",
    "DefaultModelInfo",
    "TrainConfig",
    "build_corpus",
    "default_model_dir",
    "load_default_model",
    "stdlib_dir",
    "strip_docs",
    "train_default_model",
]
