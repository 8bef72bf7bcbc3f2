"""The default model's training text: Python sources of the running interpreter's standard library.

Every Python installation ships these files, so the default model can be built anywhere without a
download. The selection is deterministic (sorted paths, seeded shuffle, fixed byte budget), so the
same interpreter always yields the same corpus.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Corpus", "build_corpus", "stdlib_dir", "strip_docs"]

# Tests, data tables, vendored tools and GUI demos: large, atypical, or not Python the way people
# write it.
_EXCLUDED_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "__pycache__",
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "encodings",
        "pydoc_data",
    }
)


@dataclass(frozen=True)
class Corpus:
    """Training text: one string per source file, in training order."""

    root: Path
    files: tuple[str, ...]  # paths relative to ``root``
    texts: tuple[str, ...]

    @property
    def num_bytes(self) -> int:
        return sum(len(text.encode("utf-8")) for text in self.texts)

    def fingerprint(self) -> str:
        """SHA-256 of the file names and contents, to tell corpora apart in the metadata."""
        digest = hashlib.sha256()
        for name, text in zip(self.files, self.texts, strict=True):
            digest.update(name.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
        return digest.hexdigest()


_COMMENT_LINE = re.compile(r"^[ \t]*#.*\n?", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n(?:[ \t]*\n){3,}")
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _definitions(
    tree: ast.Module,
) -> Iterator[ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module, classes and functions, walking statements only (expressions hold none)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DOCUMENTED):
            yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(child for child in getattr(node, field, ()) if isinstance(child, ast.AST))


def strip_docs(source: str) -> str:
    """``source`` without docstrings and comment lines (code that does not parse: unchanged).

    A model that sees only a few megabytes learns code much better when no share of them is
    prose; the original layout is kept otherwise.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    drop: set[int] = set()
    for node in _definitions(tree):
        if len(node.body) < 2:  # a lone docstring is the body: keep it
            continue
        first = node.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
            and (isinstance(node, ast.Module) or first.lineno > node.lineno)
            and first.end_lineno is not None
        ):
            drop.update(range(first.lineno - 1, first.end_lineno))
    lines = source.splitlines(keepends=True)
    code = "".join(line for i, line in enumerate(lines) if i not in drop)
    code = _COMMENT_LINE.sub("", code)
    return _BLANK_RUN.sub("\n\n\n", code).strip("\n") + "\n"


def stdlib_dir() -> Path:
    """Directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _candidate_files(root: Path, max_file_bytes: int) -> list[Path]:
    found = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if _EXCLUDED_DIRS.intersection(relative.parts[:-1]) or relative.name.startswith("test_"):
            continue
        if path.is_file() and 0 < path.stat().st_size <= max_file_bytes:
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def build_corpus(
    max_bytes: int,
    *,
    root: Path | None = None,
    code_only: bool = False,
    max_file_bytes: int = 120_000,
    seed: int = 0,
) -> Corpus:
    """Up to ``max_bytes`` of Python source from ``root`` (default: the standard library).

    Files are visited in a seeded shuffle of their sorted paths, so a small budget still samples
    the whole library rather than its alphabetically first packages. ``code_only`` applies
    :func:`strip_docs` to each file (the budget counts what is kept).

    Raises:
        FileNotFoundError: ``root`` holds no usable ``.py`` files (some minimal installations
            ship only compiled modules).
    """
    root = stdlib_dir() if root is None else Path(root)
    candidates = _candidate_files(root, max_file_bytes) if root.is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"no Python sources under {root} (this installation ships no .py files)")
    random.Random(seed).shuffle(candidates)
    files, texts, total = [], [], 0
    for path in candidates:
        if total >= max_bytes:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        if code_only:
            text = strip_docs(text)
        files.append(path.relative_to(root).as_posix())
        texts.append(text)
        total += len(text.encode("utf-8"))
    return Corpus(root=root, files=tuple(files), texts=tuple(texts))
