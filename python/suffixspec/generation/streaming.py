"""Streaming to a transformers-style streamer (`put(tensor)` / `end()`, batch size 1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from suffixspec.errors import InvalidParameterError


class StreamSink:
    """Hands the prompt once, then every emitted token in order, then `end()`."""

    def __init__(self, streamer: Any, batch_size: int, send_prompt: bool = True):
        if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
            raise InvalidParameterError("streamer must have put() and end() methods")
        if batch_size != 1:
            raise InvalidParameterError(
                f"streaming needs batch size 1 (as in transformers), got {batch_size}"
            )
        self.streamer = streamer
        # False when the caller (`model.generate`) has streamed the prompt already.
        self.send_prompt = send_prompt

    def prompt(self, tokens: np.ndarray) -> None:
        if self.send_prompt:
            self.streamer.put(torch.as_tensor(tokens, dtype=torch.long)[None, :])

    def tokens(self, tokens: np.ndarray) -> None:
        if len(tokens):
            self.streamer.put(torch.as_tensor(tokens, dtype=torch.long))

    def end(self) -> None:
        self.streamer.end()
