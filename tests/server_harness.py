"""A real `suffixspec serve` process on 127.0.0.1 for the server tests, and its test model.

The model is the tiny random Llama of `integrations/tiny_llama.py` (wide logit gaps: greedy output
does not depend on how requests are batched) with one bigram chain wired into its LM head, so
that from an "x" it writes "€x€x..." ("€" is three byte-level tokens): streamed text then has to
hold back characters that span tokens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent / "integrations"))
from tiny_llama import make_tiny_llama

REPO = Path(__file__).resolve().parents[1]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
#: The chain written into the LM head: each token's embedding raises the next one's logit.
EURO_CHAIN_TEXT = ("x", "€")


def make_model_dir(out: Path, *, chat_template: bool, context: int = 1024) -> Path:
    """The test model with ``context`` positions (rotary: no weights depend on it)."""
    make_tiny_llama(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    model.config.max_position_embeddings = context
    chain = [i for text in EURO_CHAIN_TEXT for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    with torch.no_grad():
        scale = head.norm(dim=1).mean()
        for a, b in zip(chain, chain[1:] + chain[:1], strict=True):
            head[b] += emb[a] / emb[a].norm() * scale
    model.save_pretrained(out)
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m suffixspec serve ...` on a free port; its log goes to a file (see ``log``).
    ``launcher``: another module to run instead of ``suffixspec`` (one of tests/, which may
    patch the engine before it calls the CLI)."""

    def __init__(self, model_dir: Path, log_path: Path, *args: str, launcher: str = "suffixspec"):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.model = model_dir.name
        self.log_path = log_path
        path = os.pathsep.join([str(REPO / "python"), str(Path(__file__).parent)])
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
        command = [
            sys.executable,
            "-m",
            launcher,
            "serve",
            "--model",
            str(model_dir),
            "--port",
            str(self.port),
        ]
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*command, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not come up in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` (parsed as Prometheus text), keyed ``name{label=value,...}``."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10.0).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextmanager
def running_server(
    model_dir: Path, log_path: Path, *args: str, launcher: str = "suffixspec"
) -> Iterator[ServerProcess]:
    server = ServerProcess(model_dir, log_path, *args, launcher=launcher)
    try:
        yield server
    finally:
        server.stop()


def greedy_text(model_dir: Path, prompt: Any, max_tokens: int) -> tuple[list[int], str]:
    """Plain greedy ``model.generate`` in this process: (new token ids, their text), cut at EOS."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = _model(model_dir)
    ids = tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    new = out[0, len(ids) :].tolist()
    return new, tokenizer.decode(new, skip_special_tokens=True)


_models: dict[Path, Any] = {}


def _model(model_dir: Path) -> Any:
    if model_dir not in _models:
        _models[model_dir] = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return _models[model_dir]
