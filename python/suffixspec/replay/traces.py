"""Reading request traces (JSONL, one model request per line).

Each line is an object with a ``prompt`` and an ``output``:

- ``prompt``: a string, a list of chat messages ``{"role": str, "content": str}``, or a list of
  token ids (pre-tokenized); ``prompt_ids`` may be given instead.
- ``output``: a string or a list of token ids; ``output_ids`` may be given instead.
- optional ``id`` and ``session``; ``prompt_is_delta: true`` marks a turn of a multi-turn session
  whose prompt holds only what was added since the previous turn of the same ``session`` (the full
  prompt is the concatenation of the session's prompts so far, in file order).

Anything else on the line is ignored. A malformed line raises
:class:`~suffixspec.errors.TraceFormatError` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from suffixspec.errors import InvalidParameterError, TraceFormatError

__all__ = ["Message", "PromptPart", "Trace", "TraceRecord", "read_trace"]

_MAX_TOKEN_ID = 2**31 - 1


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


#: A prompt as written on one line: text, chat messages, or token ids.
PromptPart: TypeAlias = str | tuple[Message, ...] | tuple[int, ...]


@dataclass(frozen=True)
class TraceRecord:
    """One request as read from the file (for delta turns, ``prompt`` is the delta)."""

    id: str
    session: str | None
    prompt: PromptPart
    output: str | tuple[int, ...]
    line: int
    #: Index (in the trace) of the previous turn of the same session whose full prompt this
    #: request's ``prompt`` extends; -1 when ``prompt`` is already the full prompt.
    parent: int = -1


@dataclass(frozen=True)
class Trace:
    """The requests of one trace file, in file order."""

    path: Path
    records: tuple[TraceRecord, ...]

    @property
    def name(self) -> str:
        """The file name without its extension (used as the workload name)."""
        return self.path.name.removesuffix(".jsonl")

    def __len__(self) -> int:
        return len(self.records)

    def needs_tokenizer(self) -> bool:
        """Whether any prompt or output is text."""
        return any(
            isinstance(r.output, str) or isinstance(r.prompt, str) or _is_messages(r.prompt)
            for r in self.records
        )

    def prompt_parts(self, index: int) -> list[PromptPart]:
        """The parts whose concatenation is the full prompt of request ``index``, oldest first."""
        parts = []
        while index >= 0:
            record = self.records[index]
            parts.append(record.prompt)
            index = record.parent
        return parts[::-1]


def _is_messages(prompt: PromptPart) -> bool:
    return isinstance(prompt, tuple) and bool(prompt) and isinstance(prompt[0], Message)


def read_trace(path: str | os.PathLike[str], limit: int | None = None) -> Trace:
    """Reads the first ``limit`` requests (all when ``None``) of the trace at ``path``."""
    path = Path(path)
    if limit is not None and limit < 0:
        raise InvalidParameterError(f"limit must be non-negative, got {limit}")
    records: list[TraceRecord] = []
    last_turn: dict[str, int] = {}  # session -> index of its latest request
    try:
        with path.open(encoding="utf-8") as lines:
            for line_no, obj in _objects(path, lines):
                if limit is not None and len(records) >= limit:
                    break
                record = _record(path, line_no, obj, len(records), last_turn)
                if record.session is not None:
                    last_turn[record.session] = len(records)
                records.append(record)
    except UnicodeDecodeError as e:
        raise TraceFormatError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read the trace ({e.strerror or e})") from None
    if not records and limit != 0:
        raise TraceFormatError(f"{path}: no requests in the trace")
    return Trace(path, tuple(records))


def _objects(path: Path, lines: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceFormatError(f"{path}:{line_no}: invalid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise TraceFormatError(f"{path}:{line_no}: JSON nested too deeply") from None
        except ValueError as e:  # e.g. an integer beyond Python's digit limit
            raise TraceFormatError(f"{path}:{line_no}: invalid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise TraceFormatError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def _record(
    path: Path, line_no: int, obj: dict[str, Any], index: int, last_turn: dict[str, int]
) -> TraceRecord:
    where = f"{path}:{line_no}"
    prompt = _prompt(where, _one_of(where, obj, "prompt", "prompt_ids"))
    output = _output(where, _one_of(where, obj, "output", "output_ids"))
    session = obj.get("session")
    if session is not None and not isinstance(session, str | int):
        raise TraceFormatError(f"{where}: 'session' must be a string or an integer")
    session = None if session is None else str(session)
    delta = obj.get("prompt_is_delta", False)
    if not isinstance(delta, bool):
        raise TraceFormatError(f"{where}: 'prompt_is_delta' must be true or false")
    if delta and session is None:
        raise TraceFormatError(f"{where}: 'prompt_is_delta' needs a 'session'")
    parent = last_turn.get(session, -1) if delta and session is not None else -1
    req_id = obj.get("id", f"line{line_no}")
    return TraceRecord(str(req_id), session, prompt, output, line_no, parent)


def _one_of(where: str, obj: dict[str, Any], text_key: str, ids_key: str) -> Any:
    if text_key in obj and ids_key in obj:
        raise TraceFormatError(f"{where}: give either '{text_key}' or '{ids_key}', not both")
    if ids_key in obj:
        value = obj[ids_key]
        if not isinstance(value, list):
            raise TraceFormatError(f"{where}: '{ids_key}' must be a list of token ids")
        return value
    if text_key not in obj:
        raise TraceFormatError(f"{where}: missing '{text_key}' (or '{ids_key}')")
    return obj[text_key]


def _prompt(where: str, value: Any) -> PromptPart:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise TraceFormatError(
            f"{where}: 'prompt' must be a string, a list of chat messages or a list of token ids"
        )
    if value and isinstance(value[0], dict):
        return tuple(_message(where, i, m) for i, m in enumerate(value))
    return _token_ids(where, "prompt", value)


def _message(where: str, i: int, m: Any) -> Message:
    if not isinstance(m, dict):
        raise TraceFormatError(f"{where}: prompt message {i} is not an object")
    role, content = m.get("role"), m.get("content")
    if not isinstance(role, str) or not isinstance(content, str):
        raise TraceFormatError(f"{where}: prompt message {i} needs string 'role' and 'content'")
    return Message(role, content)


def _output(where: str, value: Any) -> str | tuple[int, ...]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise TraceFormatError(f"{where}: 'output' must be a string or a list of token ids")
    return _token_ids(where, "output", value)


def _token_ids(where: str, field: str, value: list[Any]) -> tuple[int, ...]:
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= _MAX_TOKEN_ID:
            raise TraceFormatError(f"{where}: '{field}' item {i} is not a token id (got {t!r})")
    return tuple(value)
