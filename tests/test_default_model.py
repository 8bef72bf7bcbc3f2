"""The built-in default model: the shipped weights (checked, loaded, deterministic) and the
reproducible training recipe in ``tools/`` (corpus selection, a micro training run twice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import train_default_model as recipe  # noqa: E402
from default_model.corpus import build_corpus, strip_docs  # noqa: E402
from default_model.training import DEFAULT_CONFIG  # noqa: E402

from suffixspec.default_model import (  # noqa: E402
    METADATA_FILE,
    default_model_dir,
    load_default_model,
    verify_default_model,
)
from suffixspec.errors import ModelNotFoundError, SuffixSpecError  # noqa: E402

MICRO = dataclasses.replace(
    DEFAULT_CONFIG,
    corpus_bytes=20_000,
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    context=32,
    steps=4,
    batch_size=2,
    warmup_steps=2,
)

_MODULE = '''"""Module {i}."""


class Thing{i}:
    def __init__(self, value):
        self.value = value + {i}

    def double(self):
        return self.value * 2


def helper_{i}(items):
    return [item for item in items if item != {i}]
'''


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake standard library: package modules plus files the corpus must skip."""
    root = tmp_path_factory.mktemp("stdlib")
    (root / "pkg").mkdir()
    for i in range(12):
        (root / ("pkg" if i % 2 else ".") / f"mod{i}.py").write_text(_MODULE.format(i=i))
    for skipped in ("test/test_mod.py", "site-packages/vendored.py", "pkg/test_thing.py"):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_text("SKIPPED = True\n")
    (root / "empty.py").write_text("")
    return root


# --- corpus --------------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_skips_tests_and_vendored_code(corpus_root: Path) -> None:
    first = build_corpus(10**6, root=corpus_root)
    second = build_corpus(10**6, root=corpus_root)
    assert first.files == second.files
    assert first.fingerprint() == second.fingerprint()
    assert len(first.files) == 12
    assert all("test" not in f and "site-packages" not in f for f in first.files)
    assert "SKIPPED" not in "".join(first.texts)
    assert first.files != tuple(sorted(first.files))  # shuffled, so small budgets sample everything


def test_corpus_stops_at_the_byte_budget(corpus_root: Path) -> None:
    one_file = len(_MODULE.format(i=0))
    corpus = build_corpus(2 * one_file, root=corpus_root)
    assert len(corpus.files) in (2, 3)
    assert corpus.num_bytes >= 2 * one_file - 10


_DOCUMENTED_SOURCE = '''"""Module docstring
over two lines."""
# a comment line
import os  # an inline comment stays




class A:
    """Class doc."""
    x = 1

    def only_doc(self):
        """A lone docstring is the whole body and stays."""

    def f(self):
        """Doc."""
        # why
        text = "not a docstring"
        return text
'''


def test_strip_docs_keeps_only_code() -> None:
    stripped = strip_docs(_DOCUMENTED_SOURCE)
    for gone in ("Module docstring", "over two lines", "a comment line", "Class doc.", '"""Doc."""', "# why"):
        assert gone not in stripped
    for kept in ("# an inline comment stays", "lone docstring", '"not a docstring"', "return text", "x = 1"):
        assert kept in stripped
    assert "\n\n\n\n" not in stripped
    compile(stripped, "<stripped>", "exec")  # still valid Python
    broken = 'def broken(:\n    """doc"""\n'
    assert strip_docs(broken) == broken


def test_code_only_corpus_strips_every_file(corpus_root: Path) -> None:
    full = build_corpus(10**6, root=corpus_root)
    code = build_corpus(10**6, root=corpus_root, code_only=True)
    assert code.files == full.files
    assert code.texts == tuple(strip_docs(text) for text in full.texts)
    assert not any('"""Module' in text for text in code.texts)
    assert any('"""Module' in text for text in full.texts)


def test_corpus_without_sources_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Python sources"):
        build_corpus(1000, root=tmp_path)


def test_stdlib_corpus_is_available_on_this_interpreter() -> None:
    corpus = build_corpus(50_000)
    assert corpus.num_bytes >= 50_000
    assert all(name.endswith(".py") for name in corpus.files)


# --- the shipped model ---------------------------------------------------------------------------


def test_the_shipped_model_is_the_recipe_s_output_and_its_files_check() -> None:
    info = verify_default_model()
    assert info.path == default_model_dir()
    assert info.path.is_relative_to(ROOT / "python" / "suffixspec")  # ships inside the package
    metadata = info.metadata
    assert metadata["model"]["recipe"] == dataclasses.asdict(DEFAULT_CONFIG)
    assert metadata["training"]["steps"] == DEFAULT_CONFIG.steps  # never cut short by a time limit
    assert set(metadata["files"]) >= {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "demo_prompts.json",
    }
    prompts = info.prompts()
    assert prompts and all(p["name"] and p["text"].strip() for p in prompts)
    assert "default model" not in info.describe() and "Llama" in info.describe()


def test_the_default_model_generates_the_same_tokens_on_every_load() -> None:
    outputs = []
    for _ in range(2):
        model, tokenizer, _info = load_default_model()
        ids = tokenizer("def add(a, b):", return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        outputs.append(out[0].tolist())
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > ids.shape[1]


def test_a_damaged_or_missing_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(default_model_dir(), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelNotFoundError, match="damaged") as info:
        load_default_model(model_dir=copy)
    assert isinstance(info.value, SuffixSpecError)
    weights.unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        verify_default_model(copy)
    (copy / METADATA_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match="metadata"):
        verify_default_model(copy)


# --- the recipe ----------------------------------------------------------------------------------


def test_the_recipe_is_reproducible_and_writes_checked_files(corpus_root: Path, tmp_path: Path) -> None:
    shutil.copy(corpus_root / "mod0.py", corpus_root / "textwrap.py")  # the demo prompt's source
    try:
        first = recipe.build(tmp_path / "a", MICRO, corpus_root, progress=False)
        second = recipe.build(tmp_path / "b", MICRO, corpus_root, progress=False)
    finally:
        (corpus_root / "textwrap.py").unlink()
    assert first["files"] == second["files"]  # same weights, tokenizer and prompts, bit for bit
    assert first["training"]["steps"] == MICRO.steps
    info = verify_default_model(tmp_path / "a")
    assert info.prompts()[0]["name"] == "rest of textwrap.py"
    for name, digest in first["files"].items():
        assert hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest() == digest
    model, _tokenizer, _ = load_default_model(model_dir=tmp_path / "a")
    assert model.config.vocab_size == MICRO.vocab_size
    assert json.loads((tmp_path / "a" / METADATA_FILE).read_text())["model"]["parameters"] > 0
