"""Semantic de-duplication at collection scale: wall time, peak memory, recall and precision.

    .venv/bin/python bench/semantic_dedup.py                  # 1,000,000 × 768, 1.5 % planted copies
    .venv/bin/python bench/semantic_dedup.py --n 100000       # small

Builds random unit vectors (isotropic: the hardest case for k-means, whose cells then cut through
many near-duplicate pairs) and replaces a fraction of the rows by noisy copies of other rows at a
cosine drawn uniformly from [--min-cosine, 1). Priority is the row index (ingest order), so a copy may
come before or after its original. Then, in this one process:

1. ``semantic_dedup`` with eps = --eps: wall time and peak resident memory (the process's high-water
   mark, reset just before the call, so it includes the 4 bytes × n × d of the input itself).
2. Recall on the planted pairs: a pair is caught when not both of its rows are kept.
3. Against exact brute force, on --check-rows query rows (half uniformly drawn, half members of
   planted pairs): a row should be dropped exactly when some kept row before it has cosine ≥ 1 − eps
   (full products against all n rows); recall and precision of the actual drops against that.
4. Baseline on the first --baseline-rows rows: exact greedy by blockwise all pairs vs
   ``semantic_dedup`` on the same rows; their times as a ratio and whether the decisions agree.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

# Passive OpenMP waiting: on a shared CPU, spinning threads of the many mid-size products (one per
# cluster and round) wait on descheduled peers; measured 3-4x slower end to end under load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cosmos_assets.curation.dedup import DedupConfig, semantic_dedup  # noqa: E402

BLOCK_ROWS = 16384


def planted_collection(n: int, dim: int, dup_fraction: float, min_cosine: float, seed: int):
    """Unit rows with noisy copies planted; returns (rows, copy positions, their originals, cosines)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)  # torch's sampler is multi-threaded, numpy's is not
    rows = np.empty((n, dim), dtype=np.float32)
    rows_t = torch.from_numpy(rows)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        rows_t[start:stop] = torch.nn.functional.normalize(torch.randn((stop - start, dim), generator=generator), dim=1)
    n_copies = int(n * dup_fraction)
    chosen = rng.permutation(n)[: 2 * n_copies]
    copies, originals = chosen[:n_copies], chosen[n_copies:]
    cosines = rng.uniform(min_cosine, 1.0, n_copies).astype(np.float32)
    for start in range(0, n_copies, BLOCK_ROWS):
        part = slice(start, start + BLOCK_ROWS)
        source = torch.from_numpy(rows[originals[part]])
        noise = torch.randn(source.shape, generator=generator)
        noise -= (noise * source).sum(dim=1, keepdim=True) * source  # orthogonal to the original
        noise = torch.nn.functional.normalize(noise, dim=1)
        cosine = torch.from_numpy(cosines[part])[:, None]
        copy = cosine * source + torch.sqrt(1 - cosine**2) * noise
        rows[copies[part]] = torch.nn.functional.normalize(copy, dim=1).numpy()
    return rows, copies, originals, cosines


def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_gib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def should_drop_by_brute_force(rows, queries, kept, threshold) -> np.ndarray:
    """For each query row: is there a kept row before it with cosine ≥ threshold? (all n rows scanned)"""
    query_rows = torch.from_numpy(rows[queries])
    answer = np.zeros(len(queries), dtype=bool)
    kept_t = torch.from_numpy(kept)
    queries_t = torch.from_numpy(queries)
    all_rows = torch.from_numpy(rows)
    for start in range(0, len(rows), BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, len(rows))
        close = (all_rows[start:stop] @ query_rows.T) >= threshold
        row_index = torch.arange(start, stop)
        close &= kept_t[start:stop, None] & (row_index[:, None] < queries_t[None, :])
        answer |= close.any(dim=0).numpy()
    return answer


def exact_greedy_all_pairs(rows: np.ndarray, threshold: float) -> np.ndarray:
    """The greedy rule with every pair compared: blocks of rows against all rows before them."""
    all_rows = torch.from_numpy(rows)
    kept = np.ones(len(rows), dtype=bool)
    for start in range(0, len(rows), 4096):
        stop = min(start + 4096, len(rows))
        close = (all_rows[start:stop] @ all_rows[:stop].T) >= threshold
        close &= torch.arange(stop)[None, :] < torch.arange(start, stop)[:, None]
        query, earlier = (index.numpy() for index in torch.nonzero(close, as_tuple=True))
        # Edges come out grouped by query row in order, so a plain walk decides each row once all
        # earlier rows are decided.
        bounds = np.r_[0, np.flatnonzero(np.diff(query)) + 1, len(query)]
        for first, last in zip(bounds[:-1], bounds[1:]):
            if kept[earlier[first:last]].any():
                kept[start + query[first]] = False
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--dup-fraction", type=float, default=0.015, help="rows replaced by noisy copies")
    parser.add_argument("--min-cosine", type=float, default=0.995, help="copies lie at cosine in [this, 1)")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--check-rows", type=int, default=2000, help="query rows checked by brute force")
    parser.add_argument("--baseline-rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device for semantic_dedup (e.g. cuda)")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    started = time.perf_counter()
    rows, copies, originals, cosines = planted_collection(args.n, args.d, args.dup_fraction, args.min_cosine, args.seed)
    print(
        f"data: {args.n:,} × {args.d} float32 ({rows.nbytes / 2**30:.2f} GiB), {len(copies):,} planted copies "
        f"at cosine {cosines.min():.4f}–{cosines.max():.4f}, built in {time.perf_counter() - started:.1f} s"
    )

    config = DedupConfig(eps=args.eps, device=args.device)
    resettable = reset_peak_rss()
    before = peak_rss_gib()
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    result = semantic_dedup(rows, np.arange(args.n), config)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    peak = peak_rss_gib()
    print(
        f"semantic_dedup: {wall:.1f} s wall, {cpu:.1f} s CPU (user + system; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after: a busy machine stretches the wall time); "
        f"peak RSS {peak:.2f} GiB "
        f"({'during the call' if resettable else 'whole process'}; input alone {rows.nbytes / 2**30:.2f} GiB, "
        f"RSS before the call {before:.2f} GiB); {len(result.centroids)} clusters, "
        f"{result.mean_probes:.2f} searched per row; {result.n_dropped:,} dropped"
    )

    caught = ~(result.kept[copies] & result.kept[originals])
    later = np.maximum(copies, originals)
    names_partner = result.duplicate_of[later] == np.minimum(copies, originals)
    in_pairs = np.zeros(args.n, dtype=bool)
    in_pairs[copies] = in_pairs[originals] = True
    unplanted_drops = int(np.count_nonzero(~result.kept & ~in_pairs))
    print(
        f"planted pairs: recall {caught.mean():.5f} ({int((~caught).sum())} of {len(copies):,} missed); "
        f"later row names its partner in {names_partner.mean():.5f}; drops outside planted pairs: {unplanted_drops}"
    )

    rng = np.random.default_rng(args.seed + 1)
    half = args.check_rows // 2
    pair_rows = np.concatenate([copies, originals])
    queries = np.unique(np.concatenate([rng.choice(args.n, half, replace=False), rng.choice(pair_rows, half, replace=False)]))
    started = time.perf_counter()
    truth = should_drop_by_brute_force(rows, queries, result.kept, config.threshold)
    dropped = ~result.kept[queries]
    true_drops = int(np.count_nonzero(truth & dropped))
    print(
        f"brute force on {len(queries):,} query rows ({time.perf_counter() - started:.1f} s): "
        f"{int(truth.sum())} should be dropped, {int(dropped.sum())} were; "
        f"recall {true_drops / max(1, truth.sum()):.5f}, precision {true_drops / max(1, dropped.sum()):.5f}"
    )

    subset = rows[: args.baseline_rows]
    started = time.perf_counter()
    exact = exact_greedy_all_pairs(subset, config.threshold)
    naive_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = semantic_dedup(subset, np.arange(len(subset)), config)
    ours_s = time.perf_counter() - started
    print(
        f"baseline on {len(subset):,} rows: exact all-pairs greedy {naive_s:.1f} s, semantic_dedup {ours_s:.1f} s "
        f"({naive_s / ours_s:.1f}× faster); dropped {int((~exact).sum())} vs {ours.n_dropped}, "
        f"decisions differ on {int((exact != ours.kept).sum())} rows"
    )
    print(f"process peak RSS (ru_maxrss) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
