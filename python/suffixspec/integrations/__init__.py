"""suffixspec as the drafter of inference engines: :mod:`suffixspec.integrations.vllm` (a
``vllm.general_plugins`` entry point) and :mod:`suffixspec.integrations.sglang` (a
``sglang.srt.plugins`` entry point plus the tree -> SGLang draft-format conversion).

Each is an optional extra (``suffixspec[vllm]``, ``suffixspec[sglang]``). Importing this package,
or either module, never imports an engine: engine modules are imported only when an engine loads
the plugin (or when the code that needs them runs).
"""

from __future__ import annotations

import os

from suffixspec.errors import EngineIntegrationError

__all__ = ["env_flag"]


def env_flag(name: str) -> bool:
    """Whether the opt-in environment variable `name` is set: ``1``/``true``/``yes`` (any case) is
    on, unset/empty/``0``/``false``/``no`` is off, anything else is an error (a typo must not
    silently leave an engine on its own drafter)."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("", "0", "false", "no"):
        return False
    raise EngineIntegrationError(f"{name}={os.environ[name]!r}: expected 1 (on) or 0 (off)")
