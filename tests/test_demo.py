"""``suffixspec demo`` end to end on a tiny random-weight model given with ``--model``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
from suffixspec import demo  # noqa: E402
from suffixspec.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from default_model.corpus import Corpus  # noqa: E402
from default_model.training import train_tokenizer  # noqa: E402

from suffixspec.errors import InvalidParameterError  # noqa: E402

_TEXT = "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n" * 20


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(Corpus(path, ("a.py",), (_TEXT,)), 300, max_length=256)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _table_rows(out: str) -> dict[str, list[str]]:
    """Prompt name -> the row's other cells (columns are separated by two or more spaces)."""
    rows = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == len(demo._COLUMNS) and cells[-1] in ("yes", "NO"):
            rows[cells[0]] = cells[1:]
    return rows


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["demo", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_reports_identical_outputs(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(["--model", str(tiny_model_dir), "--max-new-tokens", "24", "--show-text"], capsys)
    assert status == 0, out
    assert out.splitlines()[1].startswith(f"model: {tiny_model_dir} (LlamaForCausalLM, ")
    rows = _table_rows(out)
    names = [case.name for case in demo.builtin_cases()]
    assert set(names) | {"overall"} == set(rows)
    for name in names:
        tokens, *_, identical = rows[name]
        assert 0 < int(tokens) <= 24
        assert identical == "yes"
    assert int(rows["overall"][0]) == sum(int(rows[name][0]) for name in names)
    assert "IDENTICAL token for token" in out
    assert "===== agent: revise: suffixspec's output =====" in out


def test_demo_fails_when_outputs_differ(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_generate = suffixspec.generate

    def corrupted(model: object, input_ids: torch.Tensor, **kwargs: object) -> object:
        out = real_generate(model, input_ids, **kwargs)
        out.sequences[0, -1] = (out.sequences[0, -1] + 1) % model.config.vocab_size
        return out

    monkeypatch.setattr(suffixspec, "generate", corrupted)
    status, out, _ = _run(["--model", str(tiny_model_dir), "--max-new-tokens", "8"], capsys)
    assert status == 1
    assert "FAIL" in out and "first difference at generated token" in out
    assert "NO" in _table_rows(out)["overall"]


def test_demo_reads_a_prompts_file(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def first(a):\n    return a\n---\n\n---\nclass Second:\n    pass\n")
    status, out, _ = _run(
        ["--model", str(tiny_model_dir), "--prompts", str(prompts), "--max-new-tokens", "8"],
        capsys,
    )
    assert status == 0, out
    assert set(_table_rows(out)) == {"prompts.txt #1", "prompts.txt #2", "overall"}


def test_read_prompts_rejects_a_file_without_prompts(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("---\n  \n---\n")
    with pytest.raises(InvalidParameterError, match="no prompts"):
        demo.read_prompts(empty)


def test_demo_without_a_model_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = _run(["--model", str(tmp_path / "nowhere")], capsys)
    assert status == 2 and "no such file or directory" in err

    # A damaged installation of the shipped model: a clear message, exit 2, nothing printed to stdout.
    from suffixspec.default_model import store

    monkeypatch.setattr(store, "default_model_dir", lambda: tmp_path / "missing-model")
    status, out, err = _run([], capsys)
    assert status == 2 and "reinstall suffixspec" in err and out == ""


def test_the_demo_names_the_extra_to_install_when_torch_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pip install suffixspec` (numpy and tqdm only), then `suffixspec`: one line naming the extra."""
    import builtins

    real_import = builtins.__import__

    def without_torch(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    for module in [m for m in sys.modules if m.startswith(("suffixspec.demo", "suffixspec.default_model"))]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", without_torch)
    status = main([])
    monkeypatch.setattr(builtins, "__import__", real_import)
    err = capsys.readouterr().err
    assert status == 2, err
    assert re.fullmatch(
        r"suffixspec demo: (torch|transformers) is not installed; "
        r'it comes with: pip install "suffixspec\[hf\]"',
        err.strip(),
    )
