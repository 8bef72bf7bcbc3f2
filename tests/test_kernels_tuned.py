"""The tuned default choice of kernel variant and split-K factor (kernels.tuned), on the CPU."""

from __future__ import annotations

import pytest

from suffixspec.kernels import cuda_backend, tuned
from suffixspec.kernels.tuned import TunedPoint, nearest_point


def test_every_tuned_point_names_a_known_variant_and_a_valid_split():
    assert tuned.TUNED
    for point in tuned.TUNED:
        assert point.variant in cuda_backend.VARIANTS, point
        assert point.layout in ("contiguous", "paged"), point
        assert point.head_dim in cuda_backend.SUPPORTED_HEAD_DIMS, point
        assert point.num_splits is None or 1 <= point.num_splits <= cuda_backend.MAX_SPLITS, point


def test_a_measured_shape_gets_its_own_measured_choice():
    for point in tuned.TUNED:
        got = nearest_point(
            layout=point.layout,
            head_dim=point.head_dim,
            rows=point.rows,
            groups=point.groups,
            prefix=point.prefix,
        )
        assert got == point


TABLE = (
    TunedPoint("contiguous", 128, 64, 8, 4096, "w4", 4),
    TunedPoint("contiguous", 128, 512, 512, 32768, "w8", None),
    TunedPoint("paged", 128, 64, 8, 4096, "q4", 2),
)


@pytest.mark.parametrize(
    ("layout", "head_dim", "rows", "groups", "prefix", "expected"),
    [
        ("contiguous", 128, 60, 8, 3000, 0),  # near the small point
        ("contiguous", 128, 600, 400, 65536, 1),  # beyond the big one: still the nearest
        ("contiguous", 128, 400, 256, 16384, 1),  # nearer the big one on every axis
        ("contiguous", 64, 400, 256, 16384, 1),  # no d64 point: any head dim of the layout
        ("paged", 128, 512, 512, 32768, 2),  # the only paged point, however far
    ],
)
def test_nearest_point_on_a_log_scale(layout, head_dim, rows, groups, prefix, expected):
    got = nearest_point(
        layout=layout, head_dim=head_dim, rows=rows, groups=groups, prefix=prefix, table=TABLE
    )
    assert got is TABLE[expected]


def test_no_point_for_a_layout_gives_none_and_the_fallback_variant():
    assert (
        nearest_point(layout="paged", head_dim=128, rows=64, groups=8, prefix=4096, table=TABLE[:2]) is None
    )
    # An unknown layout name never matches; the backend then falls back to DEFAULT_VARIANT.
    assert nearest_point(layout="other", head_dim=128, rows=64, groups=8, prefix=4096) is None


def test_default_candidate_follows_the_table_and_a_forced_split_keeps_the_variant():
    from suffixspec.kernels.tuned import TUNED

    # Every measured point is its own nearest point: the default is exactly what the sweep chose there.
    for point in TUNED:
        cand = cuda_backend.default_candidate(
            paged=point.layout == "paged",
            head_dim=point.head_dim,
            rows=point.rows,
            groups=point.groups,
            t_prefix=point.prefix,
        )
        assert cand == cuda_backend.Candidate(point.variant, point.num_splits), point
        forced = cuda_backend.default_candidate(
            paged=point.layout == "paged",
            head_dim=point.head_dim,
            rows=point.rows,
            groups=point.groups,
            t_prefix=point.prefix,
            num_splits=3,
        )
        assert forced == cuda_backend.Candidate(point.variant, 3)


# Shared memory per SM (sm_90: 228 KB) and the per-block opt-in limit of the smallest target (sm_80: 163 KB).
SMEM_PER_SM = 228 * 1024
SMEM_PER_BLOCK_SM80 = 163 * 1024


def test_every_variant_fits_its_tiles_and_occupancy_in_shared_memory():
    for name, spec in cuda_backend.VARIANTS.items():
        for dim in cuda_backend.SUPPORTED_HEAD_DIMS:
            tile = cuda_backend.keys_per_tile(dim, name)
            assert tile % 32 == 0 and tile * dim == spec.tile_elements, (name, dim)
        smem = spec.dynamic_smem_bytes()
        if spec.lean:  # two stages of a K and a V tile of bf16/fp16
            assert smem == 2 * 2 * spec.tile_elements * 2 > 48 * 1024
        else:
            assert smem == 0
        assert smem <= SMEM_PER_BLOCK_SM80
        assert spec.blocks_per_sm * smem <= SMEM_PER_SM


def test_launch_chunks_are_whole_tiles_of_each_variant():
    for name in cuda_backend.VARIANTS:
        for dim in cuda_backend.SUPPORTED_HEAD_DIMS:
            tile = cuda_backend.keys_per_tile(dim, name)
            for t_prefix in (1, 100, 4097, 32768):
                for forced in (None, 1, 7):
                    cfg = cuda_backend.launch_config(
                        batch=2, kv_heads=8, rows=260, t_prefix=t_prefix, head_dim=dim,
                        num_sms=132, num_splits=forced, variant=name,
                    )  # fmt: skip
                    assert cfg.chunk % tile == 0, (name, dim, t_prefix, forced)
                    assert (cfg.num_splits - 1) * cfg.chunk < t_prefix <= cfg.num_splits * cfg.chunk
