"""suffixspec as the drafter of vLLM's ``speculative_config={"method": "suffix"}``.

With ``pip install "suffixspec[vllm]"`` and ``SUFFIXSPEC_VLLM=1`` in the environment, vLLM's
suffix decoding drafts with suffixspec, arctic-inference need not be installed. The entry point
:func:`register` (group ``vllm.general_plugins``) runs in every vLLM process (front end, engine
core, workers) and

* lets the speculative config's validation accept ``method="suffix"`` without arctic-inference
  (vLLM asks ``has_arctic_inference()`` while building the config), and
* puts :class:`VllmSuffixProposer` in place of vLLM's ``SuffixDecodingProposer``: the model runner
  builds and calls it exactly as it would vLLM's, and it drafts the whole engine step with one
  native ``speculate_batch`` call (GIL released, requests in parallel) instead of a per-request
  Python loop.

vLLM's ``suffix_decoding_*`` settings map onto :class:`suffixspec.SpecConfig`
(:func:`spec_config_from_vllm`); the drafter is suffixspec's default one, and
``SUFFIXSPEC_VLLM_DRAFTER=arctic`` drafts exactly as arctic-inference does.

Failures are one line each, never a silent fallback: a vLLM version not tested
(:data:`TESTED_VLLM_VERSIONS`), arctic-inference's own plugin also enabled
(``ARCTIC_INFERENCE_ENABLED=1``), or ``method="suffix"`` without the opt-in and without arctic.

This module imports no vLLM module at import time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from suffixspec.cache import SuffixCache
from suffixspec.config import SpecConfig
from suffixspec.errors import EngineIntegrationError
from suffixspec.integrations import env_flag
from suffixspec.proposer import SuffixProposer

__all__ = [
    "DRAFTER_ENV",
    "OPT_IN_ENV",
    "TESTED_VLLM_VERSIONS",
    "VllmSuffixProposer",
    "register",
    "spec_config_from_vllm",
]

#: The environment opt-in (as arctic-inference uses ``ARCTIC_INFERENCE_ENABLED``).
OPT_IN_ENV = "SUFFIXSPEC_VLLM"
#: ``default`` (suffixspec's drafter) or ``arctic`` (drafts identical to arctic-inference's).
DRAFTER_ENV = "SUFFIXSPEC_VLLM_DRAFTER"
#: vLLM versions this integration was run and tested inside (``./dev test-engines``).
TESTED_VLLM_VERSIONS = ("0.32.0",)

_ARCTIC_ENV = "ARCTIC_INFERENCE_ENABLED"
_PLUGIN_GROUP = "vllm.general_plugins"


def _drafter_setting(drafter: str | None = None) -> str:
    value = (drafter if drafter is not None else os.environ.get(DRAFTER_ENV, "")).strip() or "default"
    if value not in ("default", "arctic"):
        raise EngineIntegrationError(f"{DRAFTER_ENV}={value!r}: expected 'default' or 'arctic'")
    return value


def spec_config_from_vllm(speculative_config: Any, drafter: str | None = None) -> SpecConfig:
    """The :class:`SpecConfig` of vLLM's speculative config (its ``suffix_decoding_*`` fields and
    ``num_speculative_tokens``). vLLM verifies token paths, so drafts are paths.

    ``drafter`` (default: ``$SUFFIXSPEC_VLLM_DRAFTER`` or ``default``): ``default`` is
    suffixspec's own drafter; ``arctic`` drafts exactly as arctic-inference does. Both draft on
    any context match (``min_match_len=0``, as vLLM with arctic does): suffixspec's own default
    of 2 costs this adapter 6-13% of the tokens per step on agent traces (benches/README.md,
    "vLLM's suffix proposer"), while the drafter already sizes short-match drafts by their
    expected acceptance."""
    drafter = _drafter_setting(drafter)
    c = speculative_config
    spec = SpecConfig().replace(
        max_depth=int(c.suffix_decoding_max_tree_depth),
        max_spec_tokens=int(c.num_speculative_tokens),
        max_spec_factor=float(c.suffix_decoding_max_spec_factor),
        min_token_prob=float(c.suffix_decoding_min_token_prob),
        max_cached_requests=int(c.suffix_decoding_max_cached_requests),
        use_tree_spec=False,
        min_match_len=0,
    )
    if drafter == "arctic":
        # vLLM's proposer passes no offset to arctic (its default, 0).
        spec = spec.replace(max_spec_offset=0.0, drafter="arctic")
    return spec


def _propose_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Sequence[Sequence[int]]]:
    """(input_batch, sampled_token_ids) from the ``propose`` call of any supported vLLM:
    ``propose(input_batch, sampled_token_ids)`` (0.11.x) or
    ``propose(num_speculative_tokens, input_batch, sampled_token_ids, slot_mappings=None)``
    (0.32.0; ``num_speculative_tokens`` is the configured maximum, ``slot_mappings`` unused)."""
    kwargs = dict(kwargs)
    kwargs.pop("slot_mappings", None)
    kwargs.pop("num_speculative_tokens", None)
    positional = list(args)
    if positional and isinstance(positional[0], (int, np.integer)):
        positional.pop(0)
    names = ("input_batch", "sampled_token_ids")
    for name in names[len(positional) :]:
        if name not in kwargs:
            raise TypeError(f"propose() missing argument {name!r}")
        positional.append(kwargs.pop(name))
    if len(positional) > 3 or kwargs:  # a third positional is slot_mappings (unused)
        raise TypeError(f"propose() got unexpected arguments: {sorted(kwargs) or positional[3:]}")
    return positional[0], positional[1]


class VllmSuffixProposer:
    """vLLM's ``SuffixDecodingProposer``, drafting with suffixspec.

    Same construction (``VllmSuffixProposer(vllm_config)``), same ``propose`` contract: one list of
    draft token ids (Python ints) per request of the input batch, empty for requests still in
    prefill or at the model's length limit. A request is started with its prompt the first time
    it shows up, gets its sampled tokens appended each step, and is stopped (its response kept
    for later requests' drafts) the first step it is no longer in the batch.
    """

    def __init__(self, vllm_config: Any):
        config = vllm_config.speculative_config
        if config is None:
            raise EngineIntegrationError("VllmSuffixProposer needs a speculative config")
        self.num_speculative_tokens = int(config.num_speculative_tokens)
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self.spec = spec_config_from_vllm(config)
        self.proposer = SuffixProposer(SuffixCache(**self.spec.cache_kwargs()), self.spec)
        self.max_depth = self.spec.max_depth
        self._active: set[Hashable] = set()

    def propose(self, *args: Any, **kwargs: Any) -> list[list[int]]:
        input_batch, sampled_token_ids = _propose_arguments(args, kwargs)
        req_ids = input_batch.req_ids
        num_tokens = input_batch.num_tokens_no_spec
        token_ids = input_batch.token_ids_cpu
        proposer = self.proposer
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        asked: list[int] = []
        contexts: list[Any] = []
        budgets: list[int] = []
        for i, sampled in enumerate(sampled_token_ids):
            if not sampled:  # a partial prefill: nothing sampled, nothing to draft
                continue
            length = int(num_tokens[i])
            budget = min(self.num_speculative_tokens, self.max_model_len - length - 1)
            if budget <= 0:  # at the length limit: the request cannot take a draft
                continue
            req_id = req_ids[i]
            if req_id not in self._active:
                proposer.start(req_id, token_ids[i, : int(input_batch.num_prompt_tokens[i])])
                self._active.add(req_id)
            proposer.extend(req_id, np.asarray(sampled, dtype=np.int32))
            asked.append(i)
            contexts.append(token_ids[i, max(0, length - self.max_depth) : length])
            budgets.append(budget)
        if asked:
            trees = proposer.propose([req_ids[i] for i in asked], contexts, budgets, budgets)
            for i, tree, budget in zip(asked, trees, budgets, strict=True):
                if len(tree):
                    # A path draft: its first `budget` nodes are its first `budget` tokens.
                    drafts[i] = tree.token_ids[:budget].tolist()
        present = input_batch.req_id_to_index
        gone = [req_id for req_id in self._active if req_id not in present]
        for req_id in gone:
            proposer.finish(req_id)
            self._active.discard(req_id)
        return drafts

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """No draft model to load."""


# --- the plugin ---


def _installed_vllm_version() -> str:
    from vllm import __version__

    return str(__version__)


def _arctic_plugin_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether arctic-inference's own vLLM plugin is installed, allowed and switched on in this
    process: it would patch the same parts of vLLM."""
    if environ.get(_ARCTIC_ENV, "0") != "1":  # arctic's own test of its switch
        return False
    from importlib.metadata import entry_points

    arctic = [ep for ep in entry_points(group=_PLUGIN_GROUP) if ep.value.startswith("arctic_inference")]
    allowed = environ.get("VLLM_PLUGINS")
    if allowed is not None:
        names = {name.strip() for name in allowed.split(",")}
        arctic = [ep for ep in arctic if ep.name in names]
    return bool(arctic)


def _suffix_drafter_available() -> bool:
    """Stands in for vLLM's ``has_arctic_inference`` in the speculative config's validation: the
    question asked there is whether a suffix drafter is available, and suffixspec is one."""
    return True


def _install() -> None:
    """Patches the vLLM modules loaded in this process (idempotent)."""
    import vllm.config.speculative as speculative
    import vllm.v1.spec_decode.suffix_decoding as suffix_decoding

    speculative.has_arctic_inference = _suffix_drafter_available
    suffix_decoding.SuffixDecodingProposer = VllmSuffixProposer
    # The model runner imports the class by name; patch it too where it is already loaded
    # (where it is not, it will import the patched name).
    runner = sys.modules.get("vllm.v1.worker.gpu_model_runner")
    if runner is not None:
        runner.SuffixDecodingProposer = VllmSuffixProposer  # type: ignore[attr-defined]


def _explain_missing_opt_in() -> None:
    """Without the opt-in and without arctic-inference, vLLM refuses ``method="suffix"`` asking
    for arctic; say that suffixspec is installed and how to switch it on (only the message
    changes: vLLM would refuse the config anyway)."""
    from vllm.config.speculative import SpeculativeConfig
    from vllm.utils.import_utils import has_arctic_inference

    if has_arctic_inference():
        return  # vLLM's own suffix decoding works: leave it alone

    original = SpeculativeConfig._validate_suffix_decoding
    if getattr(original, "_suffixspec", False):
        return

    def _validate_suffix_decoding(self: Any) -> Any:
        try:
            return original(self)
        except ImportError as error:
            raise EngineIntegrationError(
                f'speculative method "suffix" needs a suffix drafter: set {OPT_IN_ENV}=1 to draft with '
                "suffixspec (installed), or install arctic-inference"
            ) from error

    _validate_suffix_decoding._suffixspec = True  # type: ignore[attr-defined]
    SpeculativeConfig._validate_suffix_decoding = _validate_suffix_decoding  # type: ignore[method-assign]


def register() -> None:
    """The ``vllm.general_plugins`` entry point: with ``SUFFIXSPEC_VLLM=1``, make vLLM's suffix
    decoding draft with suffixspec in this process; without it, change nothing but the message of
    vLLM's refusal of ``method="suffix"`` when arctic-inference is missing.

    Raises:
        EngineIntegrationError: an untested vLLM version, arctic-inference's plugin also enabled,
            or a malformed ``SUFFIXSPEC_VLLM`` value.
    """
    if not env_flag(OPT_IN_ENV):
        _explain_missing_opt_in()
        return
    version = _installed_vllm_version()
    if version not in TESTED_VLLM_VERSIONS:
        raise EngineIntegrationError(
            f"{OPT_IN_ENV}=1: suffixspec's vLLM plugin is tested with vLLM "
            f"{', '.join(TESTED_VLLM_VERSIONS)}, not {version}; install one of those or unset {OPT_IN_ENV}"
        )
    if _arctic_plugin_enabled():
        raise EngineIntegrationError(
            f"{OPT_IN_ENV}=1 and {_ARCTIC_ENV}=1 both replace vLLM's suffix decoding: unset one of them"
        )
    _drafter_setting()  # a bad drafter name fails here, in the front end, not in the engine
    _install()
