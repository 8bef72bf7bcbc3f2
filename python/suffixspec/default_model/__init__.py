"""The built-in default model: a small Llama trained by suffixspec on the Python standard library's
sources, shipped inside the package (``data/``, ~4 MB) so that the demo and the server need no
download and print the same tokens on every machine. It is made by ``tools/train_default_model.py``
in the repository (a fixed, reproducible recipe).

>>> model, tokenizer, info = load_default_model()  # doctest: +SKIP
>>> print(info.describe())  # doctest: +SKIP
"""

from suffixspec.default_model.store import (
    METADATA_FILE,
    PROMPTS_FILE,
    DefaultModelInfo,
    default_model_dir,
    load_default_model,
    verify_default_model,
)

__all__ = [
    "METADATA_FILE",
    "PROMPTS_FILE",
    "DefaultModelInfo",
    "default_model_dir",
    "load_default_model",
    "verify_default_model",
]
