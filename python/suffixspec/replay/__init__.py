"""Model-free trace replay: how many tokens per step would speculation give on real requests?

``suffixspec replay TRACE.jsonl --tokenizer tokenizer.json`` on the command line, or::

    from suffixspec.replay import read_trace, tokenize_trace, make_proposer, replay, summarize
    trace = tokenize_trace(read_trace("trace.jsonl"), load_tokenizer("tokenizer.json"))
    result = replay(trace, make_method("suffixspec", SpecConfig()))
    print(summarize(result, VerifyCost.parse("linear:0.02")))
"""

from suffixspec.config import SpecConfig
from suffixspec.replay.engine import ReplayResult, accepted_length, replay, warm_up
from suffixspec.replay.methods import METHODS, Method, Proposer, available_methods, make_method, make_proposer
from suffixspec.replay.metrics import VerifyCost, summarize
from suffixspec.replay.tokenize import TokenizedTrace, load_tokenizer, tokenize_trace
from suffixspec.replay.traces import Trace, TraceRecord, read_trace

__all__ = [
    "METHODS",
    "Method",
    "Proposer",
    "ReplayResult",
    "SpecConfig",
    "TokenizedTrace",
    "Trace",
    "TraceRecord",
    "VerifyCost",
    "accepted_length",
    "available_methods",
    "load_tokenizer",
    "make_method",
    "make_proposer",
    "read_trace",
    "replay",
    "summarize",
    "tokenize_trace",
    "warm_up",
]
