"""``suffixspec serve``: the OpenAI-compatible server on uvicorn.

Loads the model (the built-in default one without ``--model``), builds the engine and the app, and
serves until SIGTERM/SIGINT. Shutdown stops accepting connections, lets running requests finish
for up to ``--shutdown-timeout`` seconds, then aborts the rest (their responses end with
``finish_reason`` ``"abort"``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import logging.config
from pathlib import Path
from typing import Any

from suffixspec.errors import SuffixSpecError
from suffixspec.model_loading import add_model_argument, check_model_path, load_local_model, resolve_device

__all__ = ["DEFAULT_MODEL_NAME", "add_arguments", "run"]

logger = logging.getLogger("suffixspec.server")

DEFAULT_MODEL_NAME = "suffixspec-default"
#: How long uvicorn still waits once the shutdown timeout has aborted the requests (their
#: responses end at once) before it cancels what is left.
_ABORT_GRACE_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``suffixspec serve``."""
    add_model_argument(parser)
    parser.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="the model's id in the API (default: the directory's name)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument(
        "--max-queued",
        type=int,
        default=256,
        metavar="N",
        help="most requests waiting for admission; more are answered 429 (default 256)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM/SIGINT, seconds running requests may take to finish before they are aborted",
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:1, ..."
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument("--num-blocks", type=int, default=1024, help="KV cache blocks (default 1024)")
    engine.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    engine.add_argument(
        "--policy",
        default="adaserve",
        choices=("adaserve", "greedy", "uniform", "none"),
        help="speculation per step: SLO-customized (default), most probable nodes, a fixed draft "
        "length per request, or none",
    )
    engine.add_argument("--max-running", type=int, default=None, help="most requests running at once")
    engine.add_argument(
        "--max-tokens-per-step", type=int, default=None, help="token budget of one step (prefill + verify)"
    )
    engine.add_argument(
        "--attention",
        default="auto",
        choices=("auto", "cuda", "torch"),
        help="tree attention over the paged KV: the CUDA kernel where it runs (auto, the default), "
        "the kernel or an error (cuda), or the torch path",
    )


def _load(path: str | None, device: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, default served name)."""
    if path is not None:
        check_model_path(path)  # said before torch loads
    if path is None:
        from suffixspec.default_model import load_default_model

        model, tokenizer, _ = load_default_model()
        name = DEFAULT_MODEL_NAME
    else:
        model, tokenizer = load_local_model(path)
        name = Path(path).expanduser().resolve().name
    return model.to(resolve_device(device)), tokenizer, name


def _log_config() -> dict[str, Any]:
    """uvicorn's logging setup, with suffixspec's loggers on its handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["suffixspec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def run(args: argparse.Namespace) -> int:
    import uvicorn  # the serve extra: missing, the CLI names it before any model loads

    from suffixspec.server.app import build_app
    from suffixspec.server.graceful import GracefulServer

    logging.config.dictConfig(_log_config())
    if args.max_queued < 1 or args.shutdown_timeout < 0:
        # Every request waits for admission at first: --max-queued 0 would refuse them all.
        logger.error("--max-queued must be at least 1 and --shutdown-timeout not negative")
        return 2
    try:
        logger.info("loading %s", args.model or "the built-in default model")
        model, tokenizer, name = _load(args.model, args.device)
        from suffixspec.engine.async_engine import AsyncEngine

        engine = AsyncEngine(
            model,
            tokenizer,
            num_blocks=args.num_blocks,
            block_size=args.block_size,
            policy=args.policy,
            max_running=args.max_running,
            max_tokens_per_step=args.max_tokens_per_step,
            attention=args.attention,
        )
        app = build_app(engine, model_name=args.served_model_name or name, max_queued=args.max_queued)
    except (SuffixSpecError, OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,  # configured above
        timeout_graceful_shutdown=args.shutdown_timeout + _ABORT_GRACE_S,
    )
    server = GracefulServer(config, engine, args.shutdown_timeout)
    logger.info(
        "serving %r (%s) on http://%s:%d",
        app.state.served.model_name,
        type(model).__name__,
        args.host,
        args.port,
    )
    server.run()
    return 0
