"""The built-in default model: corpus selection, training, caching, atomic builds, locking.

Everything runs the real code path on a micro recipe (a ~20k-parameter model, a few steps on a
tiny corpus), so it takes seconds.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from suffixspec.default_model import (  # noqa: E402
    METADATA_FILE,
    TrainConfig,
    build_corpus,
    default_model_dir,
    load_default_model,
    store,
    strip_docs,
    train_default_model,
    training,
)
from suffixspec.errors import InvalidParameterError, ModelNotFoundError, SuffixSpecError  # noqa: E402

MICRO = TrainConfig(
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
    max_seconds=120.0,
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


@pytest.fixture(scope="module")
def micro_model_dir(tmp_path_factory: pytest.TempPathFactory, corpus_root: Path) -> Path:
    path = tmp_path_factory.mktemp("cache") / "default-model-v1"
    load_default_model(progress=False, model_dir=path, config=MICRO, corpus_root=corpus_root)
    return path


def _temporaries(model_dir: Path) -> list[Path]:
    return sorted(model_dir.parent.glob(f".{model_dir.name}.tmp-*"))


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
    with pytest.raises(ModelNotFoundError, match="no Python sources") as info:
        build_corpus(1000, root=tmp_path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, SuffixSpecError)


def test_stdlib_corpus_is_available_on_this_interpreter() -> None:
    corpus = build_corpus(50_000)
    assert corpus.num_bytes >= 50_000
    assert all(name.endswith(".py") for name in corpus.files)


# --- training and loading ------------------------------------------------------------------------


def test_micro_model_is_a_loadable_transformers_checkpoint(micro_model_dir: Path) -> None:
    model, tokenizer, info = load_default_model(
        train_if_missing=False, progress=False, model_dir=micro_model_dir, config=MICRO
    )
    assert isinstance(model, transformers.LlamaForCausalLM)
    assert not model.training
    assert info.path == micro_model_dir
    meta = json.loads((micro_model_dir / METADATA_FILE).read_text())
    assert meta["training"]["steps"] == MICRO.steps
    assert math.isfinite(meta["training"]["final_loss"])
    assert meta["training_data"]["files"] == len(meta["training_data"]["file_list"]) > 0
    assert meta["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.config.hidden_size == MICRO.hidden_size
    assert f"{MICRO.steps} steps" in info.describe() and "standard library" in info.describe()

    text = "def helper(items):\n    return [x for x in items]\n"
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids) == text  # byte-level BPE: any text round-trips
    assert len(ids) < len(text)  # merges were learned

    # The same directory loads as any local model (the --model PATH code path).
    again = transformers.AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    batch = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(again(batch).logits, model(batch).logits)
    assert (
        transformers.AutoTokenizer.from_pretrained(micro_model_dir).eos_token_id == model.config.eos_token_id
    )


def test_second_load_uses_the_cache(micro_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = micro_model_dir / "model.safetensors"
    before = (weights.stat().st_mtime_ns, (micro_model_dir / METADATA_FILE).read_text())

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrained a cached model")

    monkeypatch.setattr(store, "train_model", fail)
    load_default_model(progress=False, model_dir=micro_model_dir, config=MICRO)
    assert (weights.stat().st_mtime_ns, (micro_model_dir / METADATA_FILE).read_text()) == before


def test_a_model_of_another_recipe_is_rebuilt(
    micro_model_dir: Path, corpus_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "default-model-v1"
    shutil.copytree(micro_model_dir, path)
    newer = dataclasses.replace(MICRO, steps=MICRO.steps + 1)
    with pytest.raises(ModelNotFoundError, match="another version of suffixspec"):
        load_default_model(train_if_missing=False, progress=False, model_dir=path, config=newer)
    assert json.loads((path / METADATA_FILE).read_text())["training"]["steps"] == MICRO.steps  # untouched
    _, _, info = load_default_model(progress=False, model_dir=path, config=newer, corpus_root=corpus_root)
    assert info.metadata["training"]["steps"] == newer.steps
    assert json.loads((path / METADATA_FILE).read_text())["model"]["recipe"]["steps"] == newer.steps


def test_training_is_reproducible(micro_model_dir: Path, corpus_root: Path, tmp_path: Path) -> None:
    info = train_default_model(tmp_path / "again", config=MICRO, corpus_root=corpus_root, progress=False)
    original = json.loads((micro_model_dir / METADATA_FILE).read_text())
    assert info.metadata["training_data"]["sha256"] == original["training_data"]["sha256"]
    assert info.metadata["training"]["loss_curve"] == original["training"]["loss_curve"]


def test_missing_model_without_training_raises(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "default-model-v1"
    with pytest.raises(ModelNotFoundError, match="not built yet"):
        load_default_model(train_if_missing=False, progress=False, model_dir=path)
    assert not path.exists()


def test_default_model_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUFFIXSPEC_CACHE_DIR", str(tmp_path))
    assert default_model_dir() == tmp_path / "default-model-v1"
    monkeypatch.delenv("SUFFIXSPEC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_model_dir() == tmp_path / "home" / ".cache" / "suffixspec" / "default-model-v1"


def test_steps_and_time_limits(corpus_root: Path, tmp_path: Path) -> None:
    info = train_default_model(tmp_path / "m", steps=2, config=MICRO, corpus_root=corpus_root, progress=False)
    assert info.metadata["training"]["steps"] == 2
    assert not info.metadata["training"]["stopped_by_time"]

    corpus = build_corpus(MICRO.corpus_bytes, root=corpus_root)
    tokenizer = training.train_tokenizer(corpus, MICRO.vocab_size, max_length=MICRO.context)
    tokens = training.token_stream(corpus, tokenizer)
    config = dataclasses.replace(MICRO, steps=10**6, max_seconds=0.3)
    _, result = training.train_model(tokens, config, tokenizer.eos_token_id, progress=False)
    assert result.stopped_by_time
    assert 0 < result.steps < 10**6


# --- atomicity and locking -----------------------------------------------------------------------


def test_leftover_temporary_is_ignored_then_cleaned(corpus_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "default-model-v1"
    leftover = tmp_path / ".default-model-v1.tmp-crashed"
    leftover.mkdir()
    (leftover / "config.json").write_text("{ half written")
    with pytest.raises(ModelNotFoundError):
        load_default_model(train_if_missing=False, progress=False, model_dir=path)
    model, _, _ = load_default_model(progress=False, model_dir=path, config=MICRO, corpus_root=corpus_root)
    assert model.config.hidden_size == MICRO.hidden_size
    assert _temporaries(path) == []


def test_interrupted_build_leaves_nothing(
    corpus_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "default-model-v1"

    def interrupted(self: object, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_default_model(progress=False, model_dir=path, config=MICRO, corpus_root=corpus_root)
    assert not path.exists()
    assert _temporaries(path) == []


def test_rebuild_replaces_a_model_in_place(micro_model_dir: Path, corpus_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "default-model-v1"
    train_default_model(path, steps=1, config=MICRO, corpus_root=corpus_root, progress=False)
    info = train_default_model(path, steps=3, config=MICRO, corpus_root=corpus_root, progress=False)
    assert info.metadata["training"]["steps"] == 3
    assert json.loads((path / METADATA_FILE).read_text())["training"]["steps"] == 3
    assert _temporaries(path) == []


def test_waiting_loader_uses_the_model_built_while_it_waited(
    corpus_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "default-model-v1"
    train_default_model(tmp_path / "built-elsewhere", config=MICRO, corpus_root=corpus_root, progress=False)
    outcome: dict[str, object] = {}

    def load_in_thread() -> None:
        try:
            outcome["model"] = load_default_model(progress=False, model_dir=path, config=MICRO)[0]
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although another process was building the model")

    monkeypatch.setattr(store, "train_model", fail)
    with store._build_lock(path, progress=False):
        # A second open file description cannot take the lock meanwhile.
        with open(tmp_path / "default-model-v1.lock") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        waiter = threading.Thread(target=load_in_thread)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # blocked on the lock
        (tmp_path / "built-elsewhere").rename(path)  # the lock holder finishes its build
    waiter.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["model"].config.hidden_size == MICRO.hidden_size


@pytest.mark.parametrize(
    ("load", "own", "expected"),
    [(0.1, 0.0, 2), (1.2, 0.0, 1), (7.0, 0.0, 1), (2.3, 2.0, 2), (1.0, 1.0, 2)],
)
def test_threads_leave_busy_cores_alone(
    load: float, own: float, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(training.os, "cpu_count", lambda: 2)
    assert training.threads_for_load(2, own_threads=own) == expected
    assert training.threads_for_load(1, own_threads=own) == 1


def test_a_corpus_shorter_than_one_window_is_rejected() -> None:
    with pytest.raises(InvalidParameterError, match="corpus too small"):
        training.train_model(torch.arange(MICRO.context), MICRO, 0, progress=False)
