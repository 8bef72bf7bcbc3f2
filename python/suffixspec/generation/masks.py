"""4D attention masks for one verification block: cached slots + the token tree."""

from __future__ import annotations

import torch

from suffixspec.generation.compat import ModelInfo


def block_mask(
    kv_valid: torch.Tensor,
    kv_positions: torch.Tensor,
    tree_mask: torch.Tensor,
    positions: torch.Tensor,
    info: ModelInfo,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Additive masks `[B, 1, n, T + n]` in the model dtype (0 = visible, dtype min = hidden).

    A block row sees the valid cached slots and its tree ancestors; sliding-window layers also
    require `q_pos - k_pos < window`, computed from positions so that holes left by compaction
    do not shift the window. Models mixing layer kinds get a dict keyed by layer type, which
    transformers uses as its per-layer mask mapping.
    """
    past = kv_valid[:, None, :].expand(-1, tree_mask.shape[1], -1)
    allowed = {"full_attention": torch.cat([past, tree_mask], dim=-1)}
    if "sliding_attention" in info.layer_types:
        window = info.sliding_window
        assert window is not None  # inspect_model sets it for models with sliding layers
        near_past = (positions[:, :, None] - kv_positions[:, None, :]) < window
        near_tree = (positions[:, :, None] - positions[:, None, :]) < window
        allowed["sliding_attention"] = torch.cat([past & near_past, tree_mask & near_tree], dim=-1)
    hidden = torch.finfo(info.dtype).min
    masks = {
        kind: torch.zeros(a.shape, dtype=info.dtype, device=a.device).masked_fill_(~a, hidden)[:, None]
        for kind, a in allowed.items()
    }
    kinds = info.mask_kinds
    if len(kinds) == 1:
        return masks[kinds[0]]
    return {kind: masks[kind] for kind in kinds}
