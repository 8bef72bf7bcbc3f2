"""Turning a :class:`~suffixspec.replay.traces.Trace` into token ids.

Text is tokenized with the ``tokenizers`` library, without special tokens. A chat message is
rendered as ``<|role|>\\ncontent\\n`` and tokenized on its own, so that the ids of a full prompt
are the concatenation of the ids of its messages: a multi-turn session then costs one
tokenization per message, not one per turn. Results can be cached on disk (``.npz``), keyed by
the trace file's content, the request limit and the tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from suffixspec.errors import InvalidParameterError
from suffixspec.replay.traces import Message, PromptPart, Trace

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "TokenizedTrace",
    "default_cache_dir",
    "load_tokenizer",
    "render_message",
    "tokenize_trace",
]

# Bump when the rendering or the file layout changes, so stale cache files are not reused.
_FORMAT = "suffixspec-tokenized-v1"

TokenArray = npt.NDArray[np.int32]


def render_message(message: Message) -> str:
    """The text a chat message is tokenized as."""
    return f"<|{message.role}|>\n{message.content}\n"


def default_cache_dir() -> Path:
    """``$SUFFIXSPEC_CACHE_DIR/tokenized`` or ``~/.cache/suffixspec/tokenized``."""
    root = os.environ.get("SUFFIXSPEC_CACHE_DIR") or Path.home() / ".cache" / "suffixspec"
    return Path(root) / "tokenized"


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """A ``tokenizers`` tokenizer from a ``tokenizer.json`` file (or a directory holding one)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise InvalidParameterError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad files
        raise InvalidParameterError(f"{path}: not a tokenizers tokenizer.json ({e})") from None


@dataclass(frozen=True)
class TokenizedTrace:
    """A trace as token ids. Prompts of delta turns are stored as deltas (see :meth:`prompts`)."""

    name: str
    ids: tuple[str, ...]
    #: Per request: index of the earlier request whose full prompt is a prefix of this one, or -1.
    parents: npt.NDArray[np.int64]
    prompt_deltas: tuple[TokenArray, ...]
    outputs: tuple[TokenArray, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def prompts(self) -> Iterator[TokenArray]:
        """The full prompt of each request, in order (built incrementally for sessions)."""
        needed = {int(p) for p in self.parents if p >= 0}
        full: dict[int, TokenArray] = {}
        for i, (parent, delta) in enumerate(zip(self.parents, self.prompt_deltas, strict=True)):
            prompt = delta if parent < 0 else np.concatenate([full.pop(int(parent)), delta])
            if i in needed:
                full[i] = prompt
            yield prompt

    @property
    def output_tokens(self) -> int:
        return int(sum(len(o) for o in self.outputs))


def tokenize_trace(
    trace: Trace, tokenizer: Tokenizer | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> TokenizedTrace:
    """Token ids of every request of ``trace``.

    ``tokenizer`` may be ``None`` when the trace is pre-tokenized. With ``cache_dir``, results are
    read from / written to ``cache_dir/<hash>.npz``.
    """
    if tokenizer is None and trace.needs_tokenizer():
        raise InvalidParameterError(f"{trace.path}: the trace holds text; a tokenizer is needed")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_cache_key(trace, tokenizer)}.npz"
        if cache_file.is_file():
            try:
                return _load(cache_file, trace.name)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # a damaged cache file: tokenize again and overwrite it
    tokenized = _tokenize(trace, tokenizer)
    if cache_file is not None:
        _save(cache_file, tokenized)
    return tokenized


def _tokenize(trace: Trace, tokenizer: Tokenizer | None) -> TokenizedTrace:
    texts: dict[str, int] = {}  # unique text -> position in the batch

    def pieces(part: PromptPart | str) -> list[str | tuple[int, ...]]:
        if isinstance(part, str):
            return [part]
        if part and isinstance(part[0], Message):
            return [render_message(m) for m in part]  # type: ignore[arg-type]
        return [part]  # type: ignore[list-item]

    layouts = []
    for record in trace.records:
        layout = (pieces(record.prompt), pieces(record.output))
        for piece in layout[0] + layout[1]:
            if isinstance(piece, str):
                texts.setdefault(piece, len(texts))
        layouts.append(layout)
    encoded: list[TokenArray] = []
    if texts:
        assert tokenizer is not None
        batch = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        encoded = [np.asarray(e.ids, dtype=np.int32) for e in batch]

    def ids_of(parts: Sequence[str | tuple[int, ...]]) -> TokenArray:
        arrays = [encoded[texts[p]] if isinstance(p, str) else np.asarray(p, dtype=np.int32) for p in parts]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)

    return TokenizedTrace(
        name=trace.name,
        ids=tuple(r.id for r in trace.records),
        parents=np.array([r.parent for r in trace.records], dtype=np.int64),
        prompt_deltas=tuple(ids_of(p) for p, _ in layouts),
        outputs=tuple(ids_of(o) for _, o in layouts),
    )


def _cache_key(trace: Trace, tokenizer: Tokenizer | None) -> str:
    h = hashlib.sha256(_FORMAT.encode())
    with trace.path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(f"|limit={len(trace)}|".encode())
    h.update(b"" if tokenizer is None else tokenizer.to_str().encode())
    return h.hexdigest()[:32]


def _flat(arrays: Sequence[TokenArray]) -> tuple[TokenArray, npt.NDArray[np.int64]]:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
    return flat.astype(np.int32, copy=False), offsets


def _split(flat: TokenArray, offsets: npt.NDArray[np.int64]) -> tuple[TokenArray, ...]:
    return tuple(flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1))


def _save(path: Path, t: TokenizedTrace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    prompt_flat, prompt_offsets = _flat(t.prompt_deltas)
    output_flat, output_offsets = _flat(t.outputs)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        ids=np.array(t.ids, dtype=str),
        parents=t.parents,
        prompt_flat=prompt_flat,
        prompt_offsets=prompt_offsets,
        output_flat=output_flat,
        output_offsets=output_offsets,
    )
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def _load(path: Path, name: str) -> TokenizedTrace:
    with np.load(path, allow_pickle=False) as z:
        return TokenizedTrace(
            name=name,
            ids=tuple(str(i) for i in z["ids"]),
            parents=z["parents"].astype(np.int64),
            prompt_deltas=_split(z["prompt_flat"], z["prompt_offsets"]),
            outputs=_split(z["output_flat"], z["output_offsets"]),
        )
