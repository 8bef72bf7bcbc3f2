"""Train suffixspec's built-in default model and write it into the package.

    ./dev py tools/train_default_model.py            # writes python/suffixspec/default_model/data/
    ./dev py tools/train_default_model.py --out DIR  # anywhere else (e.g. to check reproducibility)

The recipe (``default_model.training.TrainConfig``) is fixed: a byte-level BPE tokenizer and a ~1M
parameter Llama trained for a fixed number of steps, in fp32 on one CPU thread, on 4 MB of the
running interpreter's standard-library sources with docstrings and comments removed. The same
Python (whose stdlib is the corpus), torch and recipe give the same weights bit for bit; the
metadata records all three and the SHA-256 of every file written, which the package checks on load.

It also writes ``demo_prompts.json``: the demo's "rest of a file" prompt, cut from a standard
library file the model trained on, so the demo's prompts ship with the weights and do not depend
on the Python the demo later runs on.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from default_model.corpus import build_corpus, stdlib_dir, strip_docs
from default_model.training import DEFAULT_CONFIG, TrainConfig, token_stream, train_model, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "python" / "suffixspec" / "default_model" / "data"
METADATA_FILE = "suffixspec_default_model.json"
PROMPTS_FILE = "demo_prompts.json"
FORMAT_VERSION = 2

#: Standard-library modules present in every CPython; the first one in the corpus gives the demo's
#: "rest of a file" prompt (the first half of its code).
PROMPT_FILES = ("textwrap.py", "colorsys.py", "shlex.py", "string.py", "bisect.py")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_prompt(corpus_files: tuple[str, ...], root: Path) -> dict[str, str]:
    seen = [name for name in PROMPT_FILES if name in set(corpus_files)]
    for name in [*seen, *PROMPT_FILES]:
        path = root / name
        if path.is_file():
            text = strip_docs(path.read_text(encoding="utf-8", errors="replace"))
            half = text[: len(text) // 2]
            return {"name": f"rest of {name}", "text": half[: half.rfind("\n")].rstrip()}
    raise FileNotFoundError(f"none of {PROMPT_FILES} under {root}")


def build(out: Path, config: TrainConfig, corpus_root: Path | None, progress: bool) -> dict:
    import torch
    import transformers

    root = corpus_root or stdlib_dir()
    corpus = build_corpus(config.corpus_bytes, root=root, code_only=config.code_only, seed=config.seed)
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus, config.vocab_size, max_length=config.context)
    tokens = token_stream(corpus, tokenizer)
    model, result = train_model(tokens, config, tokenizer.eos_token_id, progress=progress)

    staging = Path(tempfile.mkdtemp(prefix="suffixspec-default-model-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        prompts = {"prompts": [file_prompt(corpus.files, root)]}
        (staging / PROMPTS_FILE).write_text(json.dumps(prompts, indent=1) + "\n", encoding="utf-8")
        files = {p.name: sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        metadata = {
            "format": "suffixspec-default-model",
            "version": FORMAT_VERSION,
            "model": {
                "architecture": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "recipe": dataclasses.asdict(config),
            },
            "training_data": {
                "source": "Python standard library sources (.py)"
                + (", docstrings and comments removed" if config.code_only else ""),
                "python_version": platform.python_version(),
                "files": len(corpus.files),
                "bytes": corpus.num_bytes,
                "tokens": len(tokens),
                "sha256": corpus.fingerprint(),
            },
            "tokenizer": {"type": "byte-level BPE", "vocab_size": len(tokenizer)},
            "training": {
                "steps": result.steps,
                "final_loss": result.final_loss,
                "seconds": round(result.seconds, 1),
                "total_seconds": round(time.perf_counter() - started, 1),
                "loss_curve": result.loss_curve,
                "torch_threads": 1,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "files": files,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--steps", type=int, help="override the recipe's step count (tests)")
    parser.add_argument("--corpus-bytes", type=int, help="override the recipe's corpus size (tests)")
    parser.add_argument("--corpus-root", type=Path, help="train on these .py files instead of the stdlib")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    overrides = {
        k: v for k, v in (("steps", args.steps), ("corpus_bytes", args.corpus_bytes)) if v is not None
    }
    config = dataclasses.replace(DEFAULT_CONFIG, **overrides)
    metadata = build(args.out, config, args.corpus_root, progress=not args.quiet)
    print(
        f"wrote {args.out}: {metadata['model']['parameters']:,} parameters, "
        f"{metadata['training']['steps']} steps in {metadata['training']['seconds']} s, "
        f"final loss {metadata['training']['final_loss']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
