"""The ``suffixspec`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``suffixspec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "suffixspec.demo",
        "speculative vs plain generation on the built-in default model (or --model PATH)",
    ),
    "replay": (
        "suffixspec.replay.cli",
        "replay real traces model-free: what would speculation buy on this workload?",
    ),
    "serve": (
        "suffixspec.server.cli",
        "an OpenAI-compatible HTTP server (the built-in default model or --model PATH)",
    ),
}


def _top_level_help() -> str:
    lines = ["usage: suffixspec COMMAND [ARGS]", "", "Lossless speculative decoding with suffix trees.", ""]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", "With no COMMAND, runs `demo`. `suffixspec COMMAND --help` for details."]
    return "\n".join(lines)


#: Which extra brings each optional top-level dependency (``pip install "suffixspec[EXTRA]"``).
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "hf",
    "transformers": "hf",
    "safetensors": "hf",
    "tokenizers": "replay",
    "matplotlib": "replay",
    "cupy": "cuda",
    "fastapi": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
}


def missing_extra_message(command: str, exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install when ``exc`` is an optional dependency's absence."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return f'suffixspec {command}: {top} is not installed; it comes with: pip install "suffixspec[{extra}]"'


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["demo"]  # the main job runs on its built-in default
    if args[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    if args[0] not in SUBCOMMANDS:
        print(f"suffixspec: unknown command {args[0]!r}\n\n{_top_level_help()}", file=sys.stderr)
        return 2
    command = args[0]
    module_name, help_text = SUBCOMMANDS[command]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"suffixspec {command}", description=help_text)
        module.add_arguments(parser)
        return int(module.run(parser.parse_args(args[1:])) or 0)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(command, exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
