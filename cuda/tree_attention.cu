// Tree-masked attention for the speculative verification step of suffixspec.
//
// Each request has N tree-node queries (root first) that see the request's whole valid prefix
// of the KV cache plus, inside the tree block (the last N KV positions), only themselves and
// their ancestors. The step reads the whole KV cache once for a small block of queries, so it
// is memory-bandwidth bound: one thread block handles every query row of a GQA group (query
// heads x tree nodes, 64 rows per block) for one (request, kv-head, KV split) and reads each KV
// tile once for all of them. Long prefixes are split across blocks (flash-decoding style) and
// merged by a log-sum-exp kernel, so even batch 1 fills the GPU.
//
// Layouts (element strides are passed in; the head dimension must be contiguous):
//   q          [B, Hq, N, D]   fp16/bf16   (transformers' query_states)
//   k, v       [B, Hkv, T, D]  fp16/bf16   T = t_prefix + N; the last N positions are the tree
//   tree_bits  [B, N, tree_words] uint32   bit j of row i: query i sees tree key j
//   kv_bits    [B, kv_words]      uint32   bit p: prefix position p holds a valid token (or NULL)
//   prefix_len [B]                int32    valid prefix = [t_prefix - prefix_len, t_prefix) (or NULL)
//   out        [B, N, Hq, D]   fp16/bf16   (written directly when num_splits == 1)
//   part_o     [S, B*N*Hq, D]  fp32        per-split normalised outputs (num_splits > 1)
//   part_lse   [S, B*N*Hq]     fp32        per-split log2-sum-exp2 of the scaled scores
// Query row r of a block's GQA group is (node i = r / G, head kvh * G + r % G), G = Hq / Hkv.
//
// Self-contained on purpose (no CUDA headers): NVRTC compiles it with no include path.
// Needs sm_80+ (mma.sync with bf16, cp.async, ldmatrix). Softmax runs in fp32 in the log2
// domain; probabilities are rounded to the input type for the P.V tensor-core product.

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

namespace suffixspec {

// The merge kernel's block; the attention kernel's warp count is a template parameter (WARPS).
constexpr int kMergeWarps = 4;
constexpr int kMergeThreads = kMergeWarps * 32;

struct alignas(8) Float2 {
    float x, y;
};

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// ---- 16-bit float conversions (inline PTX: no cuda_fp16.h / cuda_bf16.h needed) ----
template <bool BF16>
__device__ __forceinline__ u32 pack2(float lo, float hi);

template <>
__device__ __forceinline__ u32 pack2<false>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

template <>
__device__ __forceinline__ u32 pack2<true>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// ---- tensor-core and async-copy primitives ----
// D += A (16x16, row) * B (16x8, col); fp32 accumulators.
template <bool BF16>
__device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    if constexpr (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
    return static_cast<u32>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lanes 8m..8m+7 give the row addresses of matrix m.
__device__ __forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_trans(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// 16-byte global->shared copy; src_bytes == 0 zero-fills (rows past the end of a range).
__device__ __forceinline__ void cp_async_16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ bool bit_set(u32 word, int bit) { return (word >> bit) & 1u; }

// One KV tile: BN keys starting at pos0; keys at or past `limit` are masked and zero-filled.
struct TileSpan {
    int pos0;
    int limit;
    bool tree;
};

// WARPS: warps per block, each owning one m16 tile of query rows, so a block serves
// 16 * WARPS rows and every KV tile it loads is shared by all of them (the tunable row-block
// size: fewer row blocks means less re-reading of the same KV through L2).
// PAGED (a separate instantiation, so the contiguous kernel pays nothing for it): k and v are the paged caches
// [num_blocks, block_size, Hkv, D] (docs/paged_kv.md) with k_sb = the block stride, k_st = the
// slot stride, k_sh = the head stride; request b's prefix is slots [0, context_lens[b]) and its
// tree block the next n slots, each slot s at block block_tables[b][s / block_size]. t_prefix is
// then the longest context (it sizes the splits).
// BN: keys per KV tile. LEAN (the l4/l8 variants, aimed at the compute-bound regime where the
// H200 run plateaued at ~150 TFLOP/s with 25% of issue slots busy): BN * D = 8192 (64-key tiles
// at D = 128, half the barriers and per-tile softmax bookkeeping per key), both KV stages in
// dynamic shared memory (64 KB, above the 48 KB static limit) with the XOR swizzle, the per-key
// mask tests only on tiles that need them, and the output rescale only when a row's max moves.
template <bool BF16, int D, int WARPS, bool PAGED, bool QSMEM, int BN = 4096 / D, bool LEAN = false>
__device__ __forceinline__ void tree_attention_impl(
    const u16* __restrict__ q, i64 q_sb, i64 q_sh, i64 q_si,
    const u16* __restrict__ k, i64 k_sb, i64 k_sh, i64 k_st,
    const u16* __restrict__ v, i64 v_sb, i64 v_sh, i64 v_st,
    const u32* __restrict__ tree_bits, const u32* __restrict__ kv_bits,
    const int* __restrict__ prefix_len,
    const int* __restrict__ block_tables, int bt_stride, int block_size,
    const int* __restrict__ context_lens,
    u16* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_lse,
    int batch, int hq, int hkv, int n, int t_prefix, int tree_words, int kv_words,
    int chunk, int num_splits, float scale_log2) {
    constexpr int kThreads = WARPS * 32;
    constexpr int kRowsPerBlock = WARPS * 16;  // one m16 MMA tile of query rows per warp
    static_assert(BN % 32 == 0 && BN * D <= 8192, "tile shape");
    constexpr bool kSwizzle = QSMEM || LEAN;
    // Shared-memory rows: padded by 16 B (LD = D + 8), or, with QSMEM, unpadded with the 16-byte
    // chunks XOR-swizzled by the row (chunk ^ (row & 7)); both keep ldmatrix and cp.async free
    // of bank conflicts (8 rows at one logical chunk land in 8 distinct 16-byte bank groups).
    // The swizzle saves the padding so that the Q block fits beside two KV stages in 48 KB.
    constexpr int LD = kSwizzle ? D : D + 8;
    constexpr int KT = D / 16;    // k-steps of Q.K^T
    constexpr int NT = BN / 8;    // score n-tiles per KV tile
    constexpr int DT = D / 8;     // output n-tiles
    constexpr int PK = BN / 16;   // k-steps of P.V
    constexpr int CPR = D / 8;    // 16-byte chunks per KV row
    constexpr int BW = BN / 32;   // bitmask words per tile
    static_assert(KT % 2 == 0 && DT % 2 == 0 && NT % 2 == 0, "tile shape");

    constexpr int kStage = BN * LD;  // elements of one K (or V) tile stage
    __shared__ alignas(16) u16 ks_static[LEAN ? 8 : 2 * kStage];
    __shared__ alignas(16) u16 vs_static[LEAN ? 8 : 2 * kStage];
    extern __shared__ __attribute__((aligned(16))) u16 kv_dynamic[];  // LEAN: [K stage 0, K stage 1, V 0, V 1]
    u16* const ks = LEAN ? kv_dynamic : ks_static;
    u16* const vs = LEAN ? kv_dynamic + 2 * kStage : vs_static;
    // QSMEM: the block's query rows live in shared memory and each warp reloads its A fragments
    // with ldmatrix per KV tile, instead of holding D/4 registers per thread for the whole sweep
    // (registers are what limit occupancy).
    __shared__ alignas(16) u16 qs[QSMEM ? kRowsPerBlock * LD : 8];
    // Element offset of 16-byte chunk `chunk` of row `row` in a tile of LD-element rows.
    auto soff = [](int row, int chunk) -> int {
        return kSwizzle ? row * LD + ((chunk ^ (row & 7)) << 3) : row * LD + (chunk << 3);
    };

    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;  // row within the m16 tile (and +8)
    const int t = lane & 3;   // column pair within an n8 tile

    const int group = hq / hkv;
    const int rows = group * n;
    const int m_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    const int split = blockIdx.x / m_blocks;
    const int mb = blockIdx.x - split * m_blocks;
    const int kvh = blockIdx.y;
    const int b = blockIdx.z;

    // This thread's two query rows (g and g + 8 of its warp's tile).
    int row[2], node[2], head[2];
    bool row_ok[2];
#pragma unroll
    for (int s = 0; s < 2; ++s) {
        row[s] = mb * kRowsPerBlock + warp * 16 + g + 8 * s;
        row_ok[s] = row[s] < rows;
        node[s] = row_ok[s] ? row[s] / group : 0;
        head[s] = kvh * group + (row_ok[s] ? row[s] - node[s] * group : 0);
    }
    const bool warp_active = mb * kRowsPerBlock + warp * 16 < rows;
    const i64 total_rows = (i64)batch * n * hq;

    constexpr bool paged = PAGED;
    // This request's prefix length in positions (paged: its own context; contiguous: shared,
    // with left padding expressed by prefix_len).
    if (paged) t_prefix = min(max(context_lens[b], 0), t_prefix);

    // The KV range of this split: prefix keys [c_lo, c_hi), plus the tree block on split 0.
    int plen = t_prefix;
    if (prefix_len != nullptr) plen = min(max(prefix_len[b], 0), t_prefix);
    const int c_lo = max(t_prefix - plen, split * chunk);
    const int c_hi = min(t_prefix, (split + 1) * chunk);
    const int first_pos = (c_lo / BN) * BN;  // tiles aligned to BN: bitmask words line up
    const int prefix_tiles = c_hi > c_lo ? (c_hi - first_pos + BN - 1) / BN : 0;
    const int tree_tiles = split == 0 ? (n + BN - 1) / BN : 0;
    const int num_tiles = prefix_tiles + tree_tiles;

    if (num_tiles == 0) {  // an empty split (short request): contributes nothing to the merge
        if (t == 0) {
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                if (!row_ok[s]) continue;
                const i64 out_row = ((i64)b * n + node[s]) * hq + head[s];
                part_lse[split * total_rows + out_row] = neg_inf();
            }
        }
        return;
    }

    auto span_of = [&](int tile) {
        TileSpan sp;
        if (tile < prefix_tiles) {
            sp.pos0 = first_pos + tile * BN;
            sp.limit = c_hi;
            sp.tree = false;
        } else {
            sp.pos0 = t_prefix + (tile - prefix_tiles) * BN;
            sp.limit = t_prefix + n;
            sp.tree = true;
        }
        return sp;
    };

    const u16* k_base = k + (paged ? 0 : (i64)b * k_sb) + (i64)kvh * k_sh;
    const u16* v_base = v + (paged ? 0 : (i64)b * v_sb) + (i64)kvh * v_sh;
    const int* table = paged ? block_tables + (i64)b * bt_stride : nullptr;
    auto load_tile = [&](int tile, int buf) {
        const TileSpan sp = span_of(tile);
        const int lo = sp.tree ? sp.pos0 : c_lo;  // keys before c_lo belong to another split
        for (int c = threadIdx.x; c < BN * CPR; c += kThreads) {
            const int r = c / CPR;
            const int cc = c - r * CPR;
            const int pos = sp.pos0 + r;
            const bool ok = pos >= lo && pos < sp.limit;
            const int src = ok ? pos : lo;
            i64 k_off = (i64)src * k_st, v_off = (i64)src * v_st;
            if (paged) {  // slot src lives in block table[src / block_size], row src % block_size
                const i64 blk = table[src / block_size];
                const int slot = src - (src / block_size) * block_size;
                k_off = blk * k_sb + (i64)slot * k_st;
                v_off = blk * v_sb + (i64)slot * v_st;
            }
            cp_async_16(smem_addr(&ks[buf * kStage + soff(r, cc)]), k_base + k_off + cc * 8, ok ? 16 : 0);
            cp_async_16(smem_addr(&vs[buf * kStage + soff(r, cc)]), v_base + v_off + cc * 8, ok ? 16 : 0);
        }
        cp_async_commit();
    };

    // Query fragments (A operand of Q.K^T): in registers for the whole KV sweep, or (QSMEM) in
    // shared memory, written here and first read after the loop's first barrier.
    u32 qa[QSMEM ? 1 : KT][4];
    if constexpr (QSMEM) {
        constexpr int PAIRS = D / 2;  // 4-byte loads: q rows are only 4-byte aligned
        for (int idx = threadIdx.x; idx < kRowsPerBlock * PAIRS; idx += kThreads) {
            const int r = idx / PAIRS;
            const int col = 2 * (idx - r * PAIRS);
            const int qrow_idx = mb * kRowsPerBlock + r;
            u32 val = 0u;
            if (qrow_idx < rows) {
                const int nd = qrow_idx / group;
                const int hd = kvh * group + qrow_idx - nd * group;
                val = *reinterpret_cast<const u32*>(q + (i64)b * q_sb + (i64)hd * q_sh + (i64)nd * q_si + col);
            }
            *reinterpret_cast<u32*>(&qs[soff(r, col >> 3) + (col & 7)]) = val;
        }
    } else {
        const u16* qrow[2];
#pragma unroll
        for (int s = 0; s < 2; ++s)
            qrow[s] = q + (i64)b * q_sb + (i64)head[s] * q_sh + (i64)node[s] * q_si;
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
#pragma unroll
                for (int s = 0; s < 2; ++s) {
                    const int col = kt * 16 + half * 8 + 2 * t;
                    qa[kt][half * 2 + s] = row_ok[s] ? *reinterpret_cast<const u32*>(qrow[s] + col) : 0u;
                }
            }
        }
    }

    float acc[DT][4];
#pragma unroll
    for (int dn = 0; dn < DT; ++dn) acc[dn][0] = acc[dn][1] = acc[dn][2] = acc[dn][3] = 0.f;
    float m_run[2] = {neg_inf(), neg_inf()};
    float l_run[2] = {0.f, 0.f};

    load_tile(0, 0);
    for (int tile = 0; tile < num_tiles; ++tile) {
        const int buf = tile & 1;
        if (tile + 1 < num_tiles) {
            load_tile(tile + 1, buf ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        if (warp_active) {
            const TileSpan sp = span_of(tile);

            // Bitmask words covering this tile: the prefix validity word(s), or this thread's
            // two query rows' tree-mask word(s).
            u32 words[2][BW];
            const int lo = sp.tree ? sp.pos0 : c_lo;
            // A prefix tile whose keys are all in range and valid needs no per-key test (the
            // branch is warp-uniform: every row of a prefix tile sees the same keys).
            bool whole = !sp.tree && sp.pos0 >= lo && sp.pos0 + BN <= sp.limit;
#pragma unroll
            for (int w = 0; w < BW; ++w) {
                if (!sp.tree) {
                    const int idx = sp.pos0 / 32 + w;
                    const u32 word = kv_bits == nullptr ? 0xffffffffu
                                     : idx < kv_words   ? kv_bits[(i64)b * kv_words + idx]
                                                        : 0u;
                    whole = whole && word == 0xffffffffu;
                    words[0][w] = row_ok[0] ? word : 0u;
                    words[1][w] = row_ok[1] ? word : 0u;
                } else {
                    const int idx = (sp.pos0 - t_prefix) / 32 + w;
#pragma unroll
                    for (int s = 0; s < 2; ++s)
                        words[s][w] = row_ok[s] && idx < tree_words
                                          ? tree_bits[((i64)b * n + node[s]) * tree_words + idx]
                                          : 0u;
                }
            }

            // S = Q.K^T for this tile (16 rows x BN keys per warp).
            float sc[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
            for (int kt = 0; kt < KT; kt += 2) {
                if constexpr (QSMEM) {  // A rows warp*16 + (lane & 15), k chunk 2kt + (lane >> 4)
                    u32 a0[4], a1[4];
                    const int qr = warp * 16 + (lane & 15);
                    ldsm_x4(a0[0], a0[1], a0[2], a0[3], smem_addr(&qs[soff(qr, 2 * kt + (lane >> 4))]));
                    ldsm_x4(a1[0], a1[1], a1[2], a1[3], smem_addr(&qs[soff(qr, 2 * kt + 2 + (lane >> 4))]));
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) {
                        u32 b0, b1, b2, b3;
                        const int key = nt * 8 + (lane & 7);
                        ldsm_x4(b0, b1, b2, b3, smem_addr(&ks[buf * kStage + soff(key, 2 * kt + (lane >> 3))]));
                        mma_16816<BF16>(sc[nt], a0, b0, b1);
                        mma_16816<BF16>(sc[nt], a1, b2, b3);
                    }
                } else {
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) {
                        u32 b0, b1, b2, b3;
                        const int key = nt * 8 + (lane & 7);
                        ldsm_x4(b0, b1, b2, b3, smem_addr(&ks[buf * kStage + soff(key, 2 * kt + (lane >> 3))]));
                        mma_16816<BF16>(sc[nt], qa[QSMEM ? 0 : kt], b0, b1);
                        mma_16816<BF16>(sc[nt], qa[QSMEM ? 0 : kt + 1], b2, b3);
                    }
                }
            }

            // Mask, scale into the log2 domain, and update the running max.
            float tile_max[2] = {neg_inf(), neg_inf()};
            if (LEAN && whole) {
                // Rows past the end of the GQA group (row_ok false) are left unmasked here:
                // their zero queries give finite scores and their outputs are never written.
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        sc[nt][e] *= scale_log2;
                        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], sc[nt][e]);
                    }
                }
            } else {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int s = e >> 1;
                        // col >> 5 == (nt * 8) >> 5 (2t + 1 < 8): the word index is a compile-time
                        // constant, so `words` stays in registers.
                        const int col = nt * 8 + 2 * t + (e & 1);
                        const int pos = sp.pos0 + col;
                        const bool ok = pos >= lo && pos < sp.limit && bit_set(words[s][(nt * 8) >> 5], col & 31);
                        sc[nt][e] = ok ? sc[nt][e] * scale_log2 : neg_inf();
                        tile_max[s] = fmaxf(tile_max[s], sc[nt][e]);
                    }
                }
            }
            float m_use[2];
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                const float m_new = fmaxf(m_run[s], quad_max(tile_max[s]));
                // A row that has seen no key yet keeps m = -inf; subtract 0 so that no
                // (-inf) - (-inf) NaN appears (its probabilities are exactly 0).
                m_use[s] = m_new == neg_inf() ? 0.f : m_new;
                const float alpha = exp2f(m_run[s] - m_use[s]);
                m_run[s] = m_new;
                l_run[s] *= alpha;
                // LEAN: alpha is exactly 1 when the row's max did not move (most tiles of a
                // long prefix), so the DT x 2 multiplies are skipped.
                if (!LEAN || alpha != 1.f) {
#pragma unroll
                    for (int dn = 0; dn < DT; ++dn) {
                        acc[dn][2 * s] *= alpha;
                        acc[dn][2 * s + 1] *= alpha;
                    }
                }
            }
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int s = e >> 1;
                    sc[nt][e] = exp2f(sc[nt][e] - m_use[s]);
                    l_run[s] += sc[nt][e];  // per-thread partial sum; quad-reduced at the end
                }
            }

            // O += P.V: the score accumulators are re-packed as A fragments (FA2 layout trick).
#pragma unroll
            for (int kk = 0; kk < PK; ++kk) {
                u32 pa[4];
                pa[0] = pack2<BF16>(sc[2 * kk][0], sc[2 * kk][1]);
                pa[1] = pack2<BF16>(sc[2 * kk][2], sc[2 * kk][3]);
                pa[2] = pack2<BF16>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
                pa[3] = pack2<BF16>(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
                for (int dn = 0; dn < DT; dn += 2) {
                    u32 b0, b1, b2, b3;
                    const int key = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    ldsm_x4_trans(b0, b1, b2, b3, smem_addr(&vs[buf * kStage + soff(key, dn + (lane >> 4))]));
                    mma_16816<BF16>(acc[dn], pa, b0, b1);
                    mma_16816<BF16>(acc[dn + 1], pa, b2, b3);
                }
            }
        }
        __syncthreads();  // the next iteration's copy overwrites the buffer read here
    }

    if (!warp_active) return;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
        const float l = quad_sum(l_run[s]);
        if (!row_ok[s]) continue;
        const float inv = l > 0.f ? 1.f / l : 0.f;  // a row that sees no key outputs zeros
        const i64 out_row = ((i64)b * n + node[s]) * hq + head[s];
        if (num_splits == 1) {
            u16* dst = out + out_row * D + 2 * t;
#pragma unroll
            for (int dn = 0; dn < DT; ++dn)
                *reinterpret_cast<u32*>(dst + dn * 8) =
                    pack2<BF16>(acc[dn][2 * s] * inv, acc[dn][2 * s + 1] * inv);
        } else {
            const i64 prow = split * total_rows + out_row;
            float* dst = part_o + prow * D + 2 * t;
#pragma unroll
            for (int dn = 0; dn < DT; ++dn) {
                Float2 pair;
                pair.x = acc[dn][2 * s] * inv;
                pair.y = acc[dn][2 * s + 1] * inv;
                *reinterpret_cast<Float2*>(dst + dn * 8) = pair;
            }
            if (t == 0) part_lse[prow] = l > 0.f ? m_run[s] + log2f(l) : neg_inf();
        }
    }
}

// Merges the per-split partial outputs: out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M).
// One warp per output row (b, node, head).
template <bool BF16, int D>
__device__ __forceinline__ void merge_splits_impl(const float* __restrict__ part_o,
                                                  const float* __restrict__ part_lse,
                                                  u16* __restrict__ out, i64 total_rows, int num_splits) {
    constexpr int E = D / 32;  // elements per lane
    const i64 r = (i64)blockIdx.x * kMergeWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= total_rows) return;

    float mx = neg_inf();
    for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, part_lse[s * total_rows + r]);

    float acc[E];
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = 0.f;
    float wsum = 0.f;
    if (mx != neg_inf()) {
        for (int s = 0; s < num_splits; ++s) {
            const float w = exp2f(part_lse[s * total_rows + r] - mx);
            if (w > 0.f) {  // empty splits leave garbage in part_o: never read it
                wsum += w;
                const float* src = part_o + (s * total_rows + r) * D + lane * E;
#pragma unroll
                for (int e = 0; e < E; ++e) acc[e] += w * src[e];
            }
        }
    }
    const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
    u16* dst = out + r * D + lane * E;
#pragma unroll
    for (int e = 0; e < E; e += 2)
        *reinterpret_cast<u32*>(dst + e) = pack2<BF16>(acc[e] * inv, acc[e + 1] * inv);
}

}  // namespace suffixspec

#define SUFFIXSPEC_TREE_ATTENTION_KERNEL_T(NAME, BF16, D, WARPS, PAGED, QSMEM, BN, LEAN, BOUNDS)        \
    extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                             \
        const u16* q, i64 q_sb, i64 q_sh, i64 q_si, const u16* k, i64 k_sb, i64 k_sh, i64 k_st,          \
        const u16* v, i64 v_sb, i64 v_sh, i64 v_st, const u32* tree_bits, const u32* kv_bits,            \
        const int* prefix_len, const int* block_tables, int bt_stride, int block_size,                   \
        const int* context_lens, u16* out, float* part_o, float* part_lse, int batch, int hq, int hkv,   \
        int n, int t_prefix, int tree_words, int kv_words, int chunk, int num_splits,                    \
        float scale_log2) {                                                                              \
        suffixspec::tree_attention_impl<BF16, D, WARPS, PAGED, QSMEM, BN, LEAN>(                         \
            q, q_sb, q_sh, q_si, k, k_sb, k_sh, k_st, v, v_sb, v_sh, v_st, tree_bits, kv_bits,           \
            prefix_len, block_tables, bt_stride, block_size, context_lens, out, part_o, part_lse, batch, \
            hq, hkv, n, t_prefix, tree_words, kv_words, chunk, num_splits, scale_log2);                  \
    }

// The 4096-element tiles of w4/w8/q4 (32 keys at D = 128, 64 at D = 64), static shared memory.
#define SUFFIXSPEC_TREE_ATTENTION_KERNEL(NAME, BF16, D, WARPS, PAGED, QSMEM, BOUNDS) \
    SUFFIXSPEC_TREE_ATTENTION_KERNEL_T(NAME, BF16, D, WARPS, PAGED, QSMEM, 4096 / D, false, BOUNDS)
// The lean 8192-element tiles (64 keys at D = 128, 128 at D = 64) in dynamic shared memory.
#define SUFFIXSPEC_LEAN_KERNEL(NAME, BF16, D, WARPS, PAGED, BOUNDS) \
    SUFFIXSPEC_TREE_ATTENTION_KERNEL_T(NAME, BF16, D, WARPS, PAGED, false, 8192 / D, true, BOUNDS)

#define SUFFIXSPEC_MERGE_KERNEL(NAME, BF16, D)                                                           \
    extern "C" __global__ void __launch_bounds__(suffixspec::kMergeThreads) NAME(                            \
        const float* part_o, const float* part_lse, u16* out, i64 total_rows, int num_splits) {         \
        suffixspec::merge_splits_impl<BF16, D>(part_o, part_lse, out, total_rows, num_splits);          \
    }

// Variants (cuda_backend.VARIANTS): w4 (4 warps, 64 rows per block; the original kernel),
// w8 (8 warps, 128 rows), q4 (4 warps, Q and KV tiles in swizzled shared
// memory), each over the contiguous and the paged KV layout. BOUNDS: __launch_bounds__; an
// explicit minimum of blocks per SM where ptxas's default register heuristic would spill.
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_f16_d64, false, 64, 4, false, false, (128))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_f16_d128, false, 128, 4, false, false, (128))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_bf16_d64, true, 64, 4, false, false, (128))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_bf16_d128, true, 128, 4, false, false, (128))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_paged_f16_d64, false, 64, 4, true, false, (128, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_paged_f16_d128, false, 128, 4, true, false, (128, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_paged_bf16_d64, true, 64, 4, true, false, (128, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w4_paged_bf16_d128, true, 128, 4, true, false, (128, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_f16_d64, false, 64, 8, false, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_f16_d128, false, 128, 8, false, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_bf16_d64, true, 64, 8, false, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_bf16_d128, true, 128, 8, false, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_paged_f16_d64, false, 64, 8, true, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_paged_f16_d128, false, 128, 8, true, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_paged_bf16_d64, true, 64, 8, true, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_w8_paged_bf16_d128, true, 128, 8, true, false, (256, 1))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_f16_d64, false, 64, 4, false, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_f16_d128, false, 128, 4, false, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_bf16_d64, true, 64, 4, false, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_bf16_d128, true, 128, 4, false, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_paged_f16_d64, false, 64, 4, true, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_paged_f16_d128, false, 128, 4, true, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_paged_bf16_d64, true, 64, 4, true, true, (128, 2))
SUFFIXSPEC_TREE_ATTENTION_KERNEL(suffixspec_tree_attention_q4_paged_bf16_d128, true, 128, 4, true, true, (128, 2))
// l4/l8: the lean 64-key-tile kernels (LEAN above), 4 and 8 warps; 64 KB of dynamic shared
// memory per block (the launcher raises the function's limit above the 48 KB default).
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_f16_d64, false, 64, 4, false, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_f16_d128, false, 128, 4, false, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_bf16_d64, true, 64, 4, false, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_bf16_d128, true, 128, 4, false, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_paged_f16_d64, false, 64, 4, true, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_paged_f16_d128, false, 128, 4, true, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_paged_bf16_d64, true, 64, 4, true, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l4_paged_bf16_d128, true, 128, 4, true, (128, 2))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_f16_d64, false, 64, 8, false, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_f16_d128, false, 128, 8, false, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_bf16_d64, true, 64, 8, false, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_bf16_d128, true, 128, 8, false, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_paged_f16_d64, false, 64, 8, true, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_paged_f16_d128, false, 128, 8, true, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_paged_bf16_d64, true, 64, 8, true, (256, 1))
SUFFIXSPEC_LEAN_KERNEL(suffixspec_tree_attention_l8_paged_bf16_d128, true, 128, 8, true, (256, 1))

SUFFIXSPEC_MERGE_KERNEL(suffixspec_merge_splits_f16_d64, false, 64)
SUFFIXSPEC_MERGE_KERNEL(suffixspec_merge_splits_f16_d128, false, 128)
SUFFIXSPEC_MERGE_KERNEL(suffixspec_merge_splits_bf16_d64, true, 64)
SUFFIXSPEC_MERGE_KERNEL(suffixspec_merge_splits_bf16_d128, true, 128)
