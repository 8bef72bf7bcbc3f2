"""`suffixspec serve` on the command line: listed, documented, and one clear line when the serve
extra or the model is missing."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import pytest

from suffixspec.cli import main


def _suffixspec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suffixspec", *args], capture_output=True, text=True, timeout=120
    )


def test_serve_is_listed_and_documents_its_options() -> None:
    assert "serve" in _suffixspec("--help").stdout
    out = _suffixspec("serve", "--help")
    assert out.returncode == 0
    for option in (
        "--model",
        "--host",
        "--port",
        "--max-queued",
        "--shutdown-timeout",
        "--num-blocks",
        "--policy",
    ):
        assert option in out.stdout


def test_serve_names_the_extra_when_the_server_stack_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def without_server_stack(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("uvicorn", "fastapi", "starlette", "prometheus_client"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    for module in [m for m in sys.modules if m.startswith("suffixspec.server")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", without_server_stack)
    status = main(["serve", "--port", "0"])
    monkeypatch.setattr(builtins, "__import__", real_import)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err == 'suffixspec serve: uvicorn is not installed; it comes with: pip install "suffixspec[serve]"'


def test_serve_exits_2_on_a_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    out = _suffixspec("serve", "--model", str(tmp_path / "nothing"), "--port", "0")
    assert out.returncode == 2
    assert "no such file or directory" in out.stderr


@pytest.mark.parametrize("option", [["--max-queued", "0"], ["--shutdown-timeout", "-1"]])
def test_serve_refuses_bad_limits(option: list[str]) -> None:
    pytest.importorskip("uvicorn")
    out = _suffixspec("serve", *option, "--port", "0")
    assert out.returncode == 2
    assert "--max-queued must be at least 1" in out.stderr


def test_serve_refuses_the_cuda_kernel_where_it_cannot_run() -> None:
    pytest.importorskip("uvicorn")
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("the kernel may run here")
    out = _suffixspec("serve", "--attention", "cuda", "--port", "0")
    assert out.returncode == 2
    assert "cuda" in out.stderr.lower() and "Traceback" not in out.stderr
    assert "--attention" in _suffixspec("serve", "--help").stdout
