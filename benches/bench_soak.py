"""Memory soak: 1e6 mixed start/add/stop/evict cycles on a ``SuffixCache`` with its default
budgets, many of them with empty responses, showing that ``stats()`` stays bounded.

Each cycle starts a request (prompt of 0-8 tokens), may append 0-4 tokens (a third of the
responses stay empty), stops one of the live requests and sometimes evicts a cached one; ids
are reused so restarts of cached ids happen too. Every ``--every`` cycles it records
``stats()`` and the process RSS; at the end it checks the bounds (cached requests <=
``DEFAULT_MAX_CACHED_REQUESTS``, cached tokens <= ``DEFAULT_MAX_CACHED_TOKENS``, bytes and RSS
flat over the second half) and prints the table.

    ./dev bench bench_soak [--cycles 1000000] [--every 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from suffixspec import SuffixCache
from suffixspec.cache import DEFAULT_MAX_CACHED_REQUESTS, DEFAULT_MAX_CACHED_TOKENS


def rss_mb() -> float:
    """Peak RSS of this process so far (MB): a bound on what the cache ever held."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak(cycles: int, every: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    cache = SuffixCache()
    # Pre-drawn randomness (per-cycle numpy calls would dominate the run).
    prompt_lens = rng.integers(0, 9, size=cycles)
    add_lens = rng.integers(0, 5, size=cycles) * (rng.random(cycles) > 1 / 3)
    id_space = 4 * DEFAULT_MAX_CACHED_REQUESTS  # reuse ids, so cached ids get restarted
    ids = rng.integers(0, id_space, size=cycles)
    evict = rng.random(cycles) < 0.1
    tokens = rng.integers(0, 50_000, size=16).tolist()
    live: list[int] = []
    stopped: list[int] = []
    rows = []
    start = time.perf_counter()
    for i in range(cycles):
        req = int(ids[i])
        if req not in cache.active_requests:
            cache.start_request(req, tokens[: prompt_lens[i]])
            live.append(req)
        if add_lens[i]:
            cache.add_active_response(live[-1], tokens[: add_lens[i]])
        if len(live) > 8 or rng.random() < 0.5:
            stopped.append(live.pop(0))
            cache.stop_request(stopped[-1])
            del stopped[:-64]
        if evict[i] and stopped:
            req = stopped.pop()
            if req in cache.cached_requests:
                cache.evict_cached_response(req)
        if (i + 1) % every == 0:
            rows.append(
                {"cycles": i + 1, **cache.stats(), "rss_mb": rss_mb(), "s": time.perf_counter() - start}
            )
    cache.check_integrity()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=1_000_000)
    p.add_argument("--every", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = soak(args.cycles, args.every, args.seed)
    keys = ["cycles", "active_requests", "cached_requests", "cached_tokens", "tokens", "bytes", "rss_mb", "s"]
    print(" ".join(f"{k:>15}" for k in keys))
    for row in rows:
        print(" ".join(f"{row[k]:>15.1f}" if isinstance(row[k], float) else f"{row[k]:>15}" for k in keys))
    last = rows[len(rows) // 2 :]
    assert all(r["cached_requests"] <= DEFAULT_MAX_CACHED_REQUESTS for r in rows)
    assert all(r["cached_tokens"] <= DEFAULT_MAX_CACHED_TOKENS for r in rows)
    growth = max(r["bytes"] for r in last) / min(r["bytes"] for r in last)
    print(f"bytes over the second half: max/min = {growth:.3f}; peak RSS {rows[-1]['rss_mb']:.0f} MB")
    assert growth < 1.5, "stats()['bytes'] kept growing"


if __name__ == "__main__":
    main()
