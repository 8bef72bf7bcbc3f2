"""Every bad input of `suffixspec replay` gets a one-line error and exit status 2 (issue 9 item 11)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from suffixspec.cli import main
from suffixspec.replay.tokenize import tokenize_trace
from suffixspec.replay.traces import read_trace

OK_LINE = json.dumps({"prompt": [1, 2, 3], "output": [4, 5]}) + "\n"


def replay(*argv: str) -> int:
    return main(["replay", *argv, "--methods", "suffixspec", "--no-progress"])


def one_line_error(capsys: pytest.CaptureFixture[str], expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("suffixspec replay: error:") and expected in err, err


@pytest.fixture
def ok_trace(tmp_path: Path) -> Path:
    path = tmp_path / "ok.jsonl"
    path.write_text(OK_LINE)
    return path


def test_deeply_nested_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(OK_LINE + "[" * 100_000 + "]" * 100_000 + "\n")
    assert replay(str(path), "--no-cache") == 2
    one_line_error(capsys, f"{path}:2: JSON nested too deeply")


def test_integer_beyond_the_digit_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": [' + "9" * 5000 + '], "output": [1]}\n')
    assert replay(str(path), "--no-cache") == 2
    one_line_error(capsys, f"{path}:1: invalid JSON")


def test_out_naming_an_existing_file_is_refused_before_the_replay(
    ok_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import suffixspec.replay.cli as cli

    monkeypatch.setattr(cli, "replay_all", lambda *a, **k: pytest.fail("the replay ran"))
    existing = tmp_path / "report"
    existing.write_text("keep me")
    assert replay(str(ok_trace), "--no-cache", "--out", str(existing)) == 2
    one_line_error(capsys, "exists and is not a directory")
    assert existing.read_text() == "keep me"
    impossible = existing / "sub"  # under a file
    assert replay(str(ok_trace), "--no-cache", "--out", str(impossible)) == 2
    one_line_error(capsys, "cannot create the directory")


def test_a_damaged_tokenized_cache_is_rebuilt(
    ok_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUFFIXSPEC_CACHE_DIR", str(tmp_path / "cache"))
    assert replay(str(ok_trace)) == 0
    (npz,) = (tmp_path / "cache" / "tokenized").glob("*.npz")
    npz.write_bytes(b"PK\x03\x04 not really a zip")
    assert replay(str(ok_trace)) == 0  # re-tokenized, and the file rewritten
    assert b"not really" not in npz.read_bytes()
    assert replay(str(ok_trace)) == 0
    trace = read_trace(ok_trace)
    cached = tokenize_trace(trace, None, tmp_path / "cache" / "tokenized")
    assert [list(p) for p in cached.prompts()] == [list(p) for p in tokenize_trace(trace).prompts()]


def test_out_without_matplotlib_keeps_the_json_and_names_the_extra(
    ok_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.partition(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "out"
    assert replay(str(ok_trace), "--no-cache", "--out", str(out)) == 2
    one_line_error(capsys, "pip install 'suffixspec[replay]'")
    assert json.loads((out / "report.json").read_text())["results"]
