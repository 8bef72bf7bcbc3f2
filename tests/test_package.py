"""Packaging facts: stubs match the native module, imports stay light, the CLI answers."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import suffixspec
import suffixspec._native as native

STUB = Path(suffixspec.__file__).with_name("_native.pyi")


def _stub_names() -> dict[str, set[str] | None]:
    names: dict[str, set[str] | None] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = {b.name for b in node.body if isinstance(b, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = None
        elif (  # constants (not the stub's own alias)
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and not node.target.id.startswith("_")
        ):
            names[node.target.id] = None
    return names


def test_stub_covers_exactly_the_native_module() -> None:
    stub = _stub_names()
    public = {name for name in dir(native) if not name.startswith("_")}
    assert public == set(stub), f"native only: {public - set(stub)}, stub only: {set(stub) - public}"
    for name, members in stub.items():
        obj = getattr(native, name)
        if members is None:
            assert callable(obj) or isinstance(obj, (int, dict)), name
            continue
        real = {m for m in dir(obj) if not m.startswith("_")}
        declared = {m for m in members if not m.startswith("_")}
        assert real == declared, f"{name}: native only {real - declared}, stub only {declared - real}"


def test_py_typed_marker_ships() -> None:
    assert Path(suffixspec.__file__).with_name("py.typed").exists()


def test_import_does_not_pull_torch() -> None:
    code = "import sys, suffixspec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cuda_sources_are_embedded() -> None:
    names = native.cuda_source_names()
    assert names, "no .cu source embedded in the native module"
    repo_cuda = Path(__file__).resolve().parents[1] / "cuda"
    for name in names:
        assert native.cuda_source(name) == (repo_cuda / name).read_text()


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "suffixspec", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("demo", "replay"):
        assert command in out.stdout


def test_unknown_subcommand_exits_2() -> None:
    out = subprocess.run([sys.executable, "-m", "suffixspec", "nope"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown command" in out.stderr


def test_public_api_is_documented() -> None:
    for name in suffixspec.__all__:
        obj = getattr(suffixspec, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"suffixspec.{name} has no docstring"
