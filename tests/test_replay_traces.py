"""The trace reader and tokenization of `suffixspec replay` (tiny handmade traces)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from suffixspec.errors import InvalidParameterError, TraceFormatError
from suffixspec.replay.tokenize import load_tokenizer, render_message, tokenize_trace
from suffixspec.replay.traces import Message, read_trace

WORDS = ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "a", "b", "c", "d", "e", "ls", "ok"]


def word_tokenizer() -> Tokenizer:
    """Whitespace-split word-level tokenizer: id = position in WORDS, unknown words -> [UNK]."""
    vocab = {w: i for i, w in enumerate([*WORDS, "[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def ids(text: str) -> list[int]:
    return [WORDS.index(w) for w in text.split()]


def write_trace(tmp_path: Path, rows: list[object], name: str = "trace.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_reads_text_chat_and_token_id_requests(tmp_path: Path) -> None:
    path = write_trace(
        tmp_path,
        [
            {"id": "s", "prompt": "a b", "output": "c"},
            {"prompt": [{"role": "user", "content": "a"}], "output": "b", "extra": 1},
            {"prompt": [3, 4], "output": [5]},
            {"prompt_ids": [], "output_ids": [1, 2]},
        ],
    )
    trace = read_trace(path)
    assert trace.name == "trace"
    assert [r.id for r in trace.records] == ["s", "line2", "line3", "line4"]
    assert trace.records[0].prompt == "a b"
    assert trace.records[1].prompt == (Message("user", "a"),)
    assert trace.records[2].prompt == (3, 4)
    assert trace.records[2].output == (5,)
    assert trace.records[3].prompt == () and trace.records[3].output == (1, 2)
    assert trace.needs_tokenizer()


def test_limit_and_blank_lines(tmp_path: Path) -> None:
    path = write_trace(tmp_path, [{"prompt": [1], "output": [2]}, "", {"prompt": [3], "output": [4]}])
    assert len(read_trace(path)) == 2
    assert [r.line for r in read_trace(path).records] == [1, 3]
    assert len(read_trace(path, limit=1)) == 1
    assert not read_trace(path, limit=1).needs_tokenizer()


def test_deltas_rebuild_full_prompts_per_session(tmp_path: Path) -> None:
    # Two interleaved sessions; each later turn holds only the new messages.
    turn = {"prompt_is_delta": True}
    path = write_trace(
        tmp_path,
        [
            {**turn, "session": "x", "prompt": [{"role": "user", "content": "a"}], "output": "ls"},
            {**turn, "session": "y", "prompt": [{"role": "user", "content": "b"}], "output": "ls"},
            {
                **turn,
                "session": "x",
                "prompt": [{"role": "assistant", "content": "ls"}, {"role": "tool", "content": "c"}],
                "output": "ok",
            },
            {**turn, "session": "x", "prompt": [{"role": "tool", "content": "d"}], "output": "ok"},
            {"session": "x", "prompt": [{"role": "user", "content": "e"}], "output": "ok"},  # not a delta
        ],
    )
    trace = read_trace(path)
    assert [r.parent for r in trace.records] == [-1, -1, 0, 2, -1]
    full = [m for part in trace.prompt_parts(3) for m in part]
    assert full == [
        Message("user", "a"),
        Message("assistant", "ls"),
        Message("tool", "c"),
        Message("tool", "d"),
    ]

    tokenized = tokenize_trace(trace, word_tokenizer())
    prompts = list(tokenized.prompts())
    expected = [
        "<|user|> a",
        "<|user|> b",
        "<|user|> a <|assistant|> ls <|tool|> c",
        "<|user|> a <|assistant|> ls <|tool|> c <|tool|> d",
        "<|user|> e",
    ]
    for got, text in zip(prompts, expected, strict=True):
        assert got.dtype == np.int32
        assert got.tolist() == ids(text)
    assert [o.tolist() for o in tokenized.outputs] == [ids("ls"), ids("ls"), ids("ok"), ids("ok"), ids("ok")]


def test_message_rendering_matches_the_reference_format() -> None:
    assert render_message(Message("user", "hi there")) == "<|user|>\nhi there\n"


def test_delta_prompts_equal_tokenizing_the_whole_rendered_prompt(tmp_path: Path) -> None:
    rows = [
        {
            "session": "s",
            "prompt_is_delta": True,
            "prompt": [{"role": "system", "content": "a b"}],
            "output": "c",
        },
        {
            "session": "s",
            "prompt_is_delta": True,
            "prompt": [{"role": "assistant", "content": "c"}],
            "output": "d",
        },
    ]
    trace = read_trace(write_trace(tmp_path, rows))
    tok = word_tokenizer()
    last = list(tokenize_trace(trace, tok).prompts())[-1]
    whole = "".join(render_message(m) for part in trace.prompt_parts(1) for m in part)
    assert last.tolist() == tok.encode(whole, add_special_tokens=False).ids


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"prompt": "a", "output": ', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"prompt": "a"}, "missing 'output'"),
        ({"output": "a"}, "missing 'prompt'"),
        ({"prompt": 3, "output": "a"}, "'prompt' must be"),
        ({"prompt": "a", "output": {"text": "b"}}, "'output' must be"),
        ({"prompt": [{"role": "user"}], "output": "a"}, "message 0 needs string 'role' and 'content'"),
        ({"prompt": [{"role": "user", "content": "x"}, "hi"], "output": "a"}, "message 1 is not an object"),
        ({"prompt": [1, -2], "output": "a"}, "'prompt' item 1 is not a token id"),
        ({"prompt": [1], "output": [True]}, "'output' item 0 is not a token id"),
        ({"prompt": "a", "output": "b", "prompt_is_delta": True}, "needs a 'session'"),
        ({"prompt": "a", "prompt_ids": [1], "output": "b"}, "either 'prompt' or 'prompt_ids'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, row: object, message: str) -> None:
    path = write_trace(tmp_path, [{"prompt": "a", "output": "b"}, "", row])
    with pytest.raises(TraceFormatError, match=message) as info:
        read_trace(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert isinstance(info.value, ValueError)


def test_missing_empty_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="cannot read"):
        read_trace(tmp_path / "absent.jsonl")
    with pytest.raises(TraceFormatError, match="no requests"):
        read_trace(write_trace(tmp_path, [""], "empty.jsonl"))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"prompt": "\xff", "output": "a"}\n')
    with pytest.raises(TraceFormatError, match="not UTF-8"):
        read_trace(binary)


def test_text_trace_needs_a_tokenizer(tmp_path: Path) -> None:
    trace = read_trace(write_trace(tmp_path, [{"prompt": "a", "output": "b"}]))
    with pytest.raises(InvalidParameterError, match="tokenizer"):
        tokenize_trace(trace)


def test_pre_tokenized_trace_needs_no_tokenizer(tmp_path: Path) -> None:
    trace = read_trace(write_trace(tmp_path, [{"prompt": [7, 8], "output": [9]}]))
    tokenized = tokenize_trace(trace)
    assert [p.tolist() for p in tokenized.prompts()] == [[7, 8]]
    assert tokenized.outputs[0].tolist() == [9]


def test_tokenized_traces_are_cached_on_disk(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = write_trace(tmp_path, [{"id": "q", "prompt": "a b", "output": "c d"}])
    first = tokenize_trace(read_trace(path), word_tokenizer(), cache)
    assert len(list(cache.glob("*.npz"))) == 1
    again = tokenize_trace(read_trace(path), word_tokenizer(), cache)
    assert again.ids == ("q",)
    assert [p.tolist() for p in again.prompts()] == [p.tolist() for p in first.prompts()] == [ids("a b")]
    assert again.outputs[0].tolist() == ids("c d")
    # Another content is another cache entry, never a stale hit.
    write_trace(tmp_path, [{"id": "q", "prompt": "e", "output": "c d"}])
    changed = tokenize_trace(read_trace(path), word_tokenizer(), cache)
    assert next(changed.prompts()).tolist() == ids("e")
    assert len(list(cache.glob("*.npz"))) == 2


def test_bad_tokenizer_file_and_limit(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="not found"):
        load_tokenizer(tmp_path / "absent.json")
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{}")
    with pytest.raises(InvalidParameterError, match="not a tokenizers"):
        load_tokenizer(tmp_path)  # a directory holding tokenizer.json
    good = tmp_path / "good"
    good.mkdir()
    word_tokenizer().save(str(good / "tokenizer.json"))
    assert load_tokenizer(good).encode("a b", add_special_tokens=False).ids == ids("a b")
    with pytest.raises(InvalidParameterError, match="limit"):
        read_trace(write_trace(tmp_path, [{"prompt": [1], "output": [2]}]), limit=-1)
