"""De-duplication of curated clips: exact (same content hash) and semantic (SemDeDup-style).

Semantic de-duplication follows SemDeDup (k-means over clip embeddings; a clip is dropped when its
cosine similarity to an already kept clip exceeds 1 − eps), with deliberate differences:

- Visiting order. SemDeDup visits each cluster's members by distance to the centroid. Here clips are
  visited in a caller-given priority order (e.g. ingest order, older first) and the earlier clip of a
  duplicate pair is the one kept. De-duplication runs over the whole collection, and with this order a
  clip's fate depends only on clips that came before it: clips landing tomorrow cannot overturn what
  was kept today, and a clip landing today that duplicates one from last week is the one dropped.
- Clusters are a search structure, not a scope. SemDeDup compares clips only within their own cluster,
  but k-means boundaries cut through near-duplicate pairs: on isotropic 768-d data a copy at cosine
  0.995 has its nearest centroid differ from its original's in about 15 % of pairs. Each kept clip
  sits in its nearest cluster; each clip is compared with the kept clips of every cluster whose
  centroid is almost as similar to it as its nearest one (within a margin, see ``DedupConfig``). The
  result is the greedy rule applied across cluster boundaries, so which clips are kept hardly depends
  on the clustering (which is recomputed as the collection grows).
- The search runs on a random projection to ``search_dim`` (128) dimensions, with a looser threshold
  there, and every pair it finds is confirmed with the exact cosine of the full embeddings. Random
  projection preserves the distance of any fixed pair up to a factor whose spread is known (see
  ``SearchSpace``), so the looser threshold loses a true pair with probability ~1e-7; k-means,
  assignment and the within-cluster products then cost 768/128 = 6× less, and the search's copies of
  the rows are 6× smaller than the input.

No Dagster here; the assets call these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cosmos_assets.common.knobs import knob

# Float32 rounding in the cosine of two unit vectors is ~1e-7..1e-6; with this allowance eps = 0 still
# drops clips whose embeddings point in the same direction instead of depending on rounding.
COSINE_ROUNDING = 1e-5
# Within one round a clip records at most this many earlier same-round candidates (the earliest).
# A batch of thousands of identical clips would otherwise produce group² candidate pairs; the earliest
# members of such a group are the ones the greedy rule keeps, so the cap rarely loses information, and
# where it might the clip is re-checked exactly (``_RoundResolver.fallback``).
CANDIDATES_PER_CLIP = 16
# Rounds start small and double up to the round size: comparisons with clips of the same round cost
# (round size)² when they are all one dense group, while later rounds only meet the few kept members
# of such a group.
FIRST_ROUND_ROWS = 16384
ROUND_BYTES = 256 * 2**20
BLOCK_ROWS = 16384
ASSIGN_BLOCK_ROWS = 2048
KMEANS_SAMPLE_PER_CLUSTER = 24
# For a pair at cosine c, 1 − c measured after a Gaussian projection to m dimensions is (1 − c)·F with
# log F roughly normal with standard deviation 2/sqrt(m); allowing 5.2 of those loses ~1e-7 of pairs.
PROJECTION_TAIL_SIGMAS = 5.2
# Beyond this loosened eps the small-difference approximation above no longer holds, and the looser
# threshold would admit a large share of all pairs: search in the full dimension instead.
MAX_PROJECTED_EPS = 0.25


@dataclass(frozen=True)
class DedupConfig:
    """Settings of ``semantic_dedup``.

    Why the probe margin's default is 5·sqrt(eps/m): a near-duplicate at cosine 1 − eps differs from its
    original by a vector of length sqrt(2·eps), which shifts its similarities to two centroids by a
    difference with standard deviation 2·sqrt(eps/m) when the difference points in no particular
    direction; the margin is 2.5 of those. Measured on isotropic 768-d data projected to 128 (the hardest
    case: no cluster structure; 200k rows, 550 clusters), with 3.6 clusters searched per clip on average
    it misses 0.02 % of pairs at cosine 0.995 and 0.25 % at 0.99, where searching only the nearest cluster
    misses 15 % and the two nearest 3.7 %. Real embeddings, with clearer cluster structure, search fewer
    clusters for the same margin; a larger margin buys recall for near-duplicate differences that are
    aligned with cluster boundaries.
    """

    eps: float = knob(
        0.01, "A clip is dropped when its cosine similarity to an earlier kept clip is at least 1 - eps (0..1; the "
              "Cosmos cookbook uses 0.01, Open-Sora's cosine 0.98 is 0.02; 0 drops only exact copies of a direction).")
    n_clusters: int | None = knob(
        None, "k-means clusters; unset picks about sqrt(1.5 n) for n clips, balancing assigning clips to centroids "
              "(n*k) against comparing clips within clusters (n^2/k).")
    kmeans_iterations: int = knob(
        8, "Lloyd iterations of k-means; the clustering only has to group near-duplicates, not converge.")
    kmeans_sample: int | None = knob(None, "Clips k-means is fitted on; unset: 24 per cluster.")
    search_dim: int | None = knob(
        128, "Dimension of the random projection the search runs in; unset (or at least the embedding's) searches "
             "the embeddings themselves.")
    probe_margin: float | None = knob(
        None, "A clip is compared with the kept clips of every cluster whose centroid similarity is within this "
              "margin (cosine) of its best one; unset: 5 * sqrt(eps / search_dim).")
    max_probes: int = knob(16, "Most clusters searched per clip.")
    round_rows: int | None = knob(
        None, "(clip, searched cluster) pairs per round of the search; unset fills 256 MiB.")
    seed: int = knob(0, "Seed of the k-means sample, its initialisation and the projection.")
    device: str = knob("cpu", "Torch device of the matrix products: cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {self.eps}")
        for name in ("n_clusters", "kmeans_sample", "search_dim", "round_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.kmeans_iterations < 0:
            raise ValueError(f"kmeans_iterations must be ≥ 0, got {self.kmeans_iterations}")
        if self.probe_margin is not None and not self.probe_margin >= 0.0:
            raise ValueError(f"probe_margin must be ≥ 0, got {self.probe_margin}")
        if self.max_probes < 1:
            raise ValueError(f"max_probes must be at least 1, got {self.max_probes}")

    @property
    def threshold(self) -> float:
        return 1.0 - self.eps - COSINE_ROUNDING


@dataclass(frozen=True)
class SearchSpace:
    """Where the search runs: the embeddings' own d dimensions, or a random projection to fewer.

    candidate_threshold: cosine, measured in this space, above which a pair is a candidate (to be
        confirmed with the exact cosine when projected).
    """

    dim: int
    projected: bool
    candidate_threshold: float
    probe_margin: float

    @classmethod
    def for_config(cls, config: DedupConfig, dim: int) -> SearchSpace:
        target = config.search_dim
        if target is not None and target < dim:
            loosened_eps = config.eps * math.exp(PROJECTION_TAIL_SIGMAS * 2 / math.sqrt(target))
            if loosened_eps <= MAX_PROJECTED_EPS:
                return cls(target, True, 1 - loosened_eps - COSINE_ROUNDING, cls._margin(config, target))
        return cls(dim, False, config.threshold, cls._margin(config, dim))

    @staticmethod
    def _margin(config: DedupConfig, dim: int) -> float:
        if config.probe_margin is not None:
            return config.probe_margin
        return 5.0 * math.sqrt(config.eps / max(dim, 1))


@dataclass(frozen=True)
class DedupResult:
    """Per clip (in input order): kept or not, and for a dropped clip the kept clip it duplicates.

    kept: bool[n].
    duplicate_of: int64[n], -1 for kept clips; otherwise the index of a kept clip of higher priority
        whose cosine similarity to this one is ≥ 1 − eps.
    similarity: float32[n], that cosine similarity (of the full embeddings); NaN for kept clips.
    cluster: int32[n], the nearest k-means cluster.
    centroids: float32[k, m], unit-norm, in the search space (m = search dimension). Pass them back
        as ``semantic_dedup(..., centroids=...)`` with the same config to search a grown collection
        with the same clusters, which leaves every earlier decision exactly as it was (with fresh
        clusters they stay unchanged up to the search's recall).
    mean_probes: clusters searched per clip, on average.
    """

    kept: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray
    cluster: np.ndarray
    centroids: np.ndarray
    mean_probes: float

    @property
    def n_dropped(self) -> int:
        return int(np.count_nonzero(~self.kept))


def visit_order(priority: np.ndarray | None, n: int) -> np.ndarray:
    """Indices in the order clips are visited: smallest priority first, ties by index."""
    if priority is None:
        return np.arange(n, dtype=np.int64)
    priority = np.asarray(priority)
    if priority.shape != (n,):
        raise ValueError(f"priority must have shape ({n},), got {priority.shape}")
    if priority.dtype.kind not in "biufmM":
        raise ValueError(f"priority must be numeric or datetime, got dtype {priority.dtype}")
    if priority.dtype.kind == "f" and np.isnan(priority).any():
        raise ValueError(f"priority has NaN at index {int(np.flatnonzero(np.isnan(priority))[0])}")
    return np.argsort(priority, kind="stable").astype(np.int64)


def exact_duplicates(content_hashes, priority: np.ndarray | None = None) -> np.ndarray:
    """For each clip, the index of the first clip (by priority) with the same content hash, or -1.

    The first clip of each hash is kept (-1); every other names it. Hashes may be str, bytes or ints.
    """
    hashes = np.asarray(content_hashes)
    if hashes.ndim != 1:
        raise ValueError(f"content_hashes must be one-dimensional, got shape {hashes.shape}")
    n = len(hashes)
    order = visit_order(priority, n)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return duplicate_of
    _, group = np.unique(hashes, return_inverse=True)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    by_group_then_rank = np.lexsort((rank, group))
    sorted_group = group[by_group_then_rank]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    first_of_group = by_group_then_rank[np.repeat(starts, np.diff(np.r_[starts, n]))]
    duplicate_of[by_group_then_rank] = first_of_group
    duplicate_of[first_of_group] = -1
    return duplicate_of


def _normalise(matrix: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(matrix, dim=1)


class _Embeddings:
    """The caller's n × d array, read in blocks or gathered by row; never copied whole."""

    def __init__(self, embeddings, device: torch.device):
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().cpu().numpy()
        array = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
        if array.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (n × d), got shape {array.shape}")
        if array.dtype.kind != "f":
            raise ValueError(f"embeddings must be floating point, got dtype {array.dtype}")
        if array.shape[1] == 0 and array.shape[0] > 0:
            raise ValueError("embeddings have zero columns")
        self.array = array
        self.n, self.dim = array.shape
        self.device = device
        # A C-contiguous float32 array is read by torch in place; anything else (float64, strided
        # memmaps) goes through a numpy copy of each block.
        self.torch_view = (
            torch.from_numpy(array)
            if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
            else None
        )
        self.inverse_norm = torch.ones(self.n)

    def _raw_block(self, start: int, stop: int) -> torch.Tensor:
        if self.torch_view is not None:
            return self.torch_view[start:stop]
        return torch.from_numpy(np.ascontiguousarray(self.array[start:stop], dtype=np.float32))

    def unit_rows(self, indices: np.ndarray) -> torch.Tensor:
        if self.torch_view is not None:
            raw = self.torch_view.index_select(0, torch.from_numpy(indices))
        else:
            raw = torch.from_numpy(np.ascontiguousarray(self.array[indices], dtype=np.float32))
        raw.mul_(self.inverse_norm.index_select(0, torch.from_numpy(indices))[:, None])
        return raw.to(self.device)

    def exact_cosines(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        cosines = np.empty(len(first), dtype=np.float32)
        for start in range(0, len(first), BLOCK_ROWS):
            part = slice(start, start + BLOCK_ROWS)
            products = self.unit_rows(first[part]) * self.unit_rows(second[part])
            cosines[part] = products.sum(dim=1).cpu().numpy()
        return cosines

    def measure(self) -> None:
        """Row norms, rejecting rows without a direction (zero, NaN, infinite)."""
        inverse = torch.empty(self.n, dtype=torch.float32)
        for start in range(0, self.n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, self.n)
            norms = torch.linalg.vector_norm(self._raw_block(start, stop), dim=1)
            unusable = ~torch.isfinite(norms) | (norms == 0)
            if bool(unusable.any()):
                row = start + int(torch.nonzero(unusable)[0])
                raise ValueError(
                    f"embedding row {row} has norm {float(norms[row - start])}: rows must be finite and "
                    "non-zero to have a cosine similarity"
                )
            inverse[start:stop] = 1.0 / norms
        self.inverse_norm = inverse

    def search_rows(self, space: SearchSpace, seed: int) -> torch.Tensor:
        """Unit rows in the search space (n × m): projected, or the embeddings themselves."""
        if not space.projected and self.torch_view is not None and self.device.type == "cpu":
            if bool(((self.inverse_norm - 1).abs() <= 1e-6).all()):
                return self.torch_view  # already unit rows: search them in place rather than copy
        projection = None
        if space.projected:
            generator = torch.Generator().manual_seed(seed)
            projection = torch.randn((self.dim, space.dim), generator=generator).to(self.device)
        rows = torch.empty((self.n, space.dim), dtype=torch.float32, device=self.device)
        for start in range(0, self.n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, self.n)
            block = self._raw_block(start, stop).to(self.device)
            if projection is not None:
                rows[start:stop] = _normalise(block @ projection)
            else:
                rows[start:stop] = block * self.inverse_norm[start:stop, None].to(self.device)
        return rows


def _fit_centroids(rows: torch.Tensor, n_clusters: int, config: DedupConfig) -> torch.Tensor:
    """Spherical k-means (cosine) on a random sample of the (unit) rows."""
    rng = np.random.default_rng(config.seed)
    sample_size = config.kmeans_sample or KMEANS_SAMPLE_PER_CLUSTER * n_clusters
    sample_size = min(len(rows), max(sample_size, n_clusters))
    chosen = np.sort(rng.choice(len(rows), sample_size, replace=False))
    sample = rows.index_select(0, torch.from_numpy(chosen).to(rows.device))
    centroids = sample[torch.from_numpy(rng.choice(sample_size, n_clusters, replace=False)).to(rows.device)]
    for _ in range(config.kmeans_iterations):
        best_similarity, assignment = _nearest(sample, centroids)
        sums = _cluster_sums(sample, assignment, n_clusters)
        counts = torch.bincount(assignment, minlength=n_clusters)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            # Re-seed empty clusters with the worst-fitting sample rows, the usual k-means repair.
            worst = torch.argsort(best_similarity, stable=True)[: len(empty)]
            sums[empty] = sample[worst]
        centroids = _normalise(sums)
    return _distinct(centroids)


def _distinct(centroids: torch.Tensor) -> torch.Tensor:
    """The centroids without repeats (k-means on few distinct rows leaves several on the same point).

    Tied centroids would make clips split their searches arbitrarily among copies of one cluster, and
    ``max_probes`` could then cut off the copy holding a clip's duplicate.
    """
    centroids = centroids[torch.linalg.vector_norm(centroids, dim=1) > 0.5]
    repeats = torch.triu(centroids @ centroids.T >= 1 - COSINE_ROUNDING, diagonal=1).any(dim=0)
    return centroids[~repeats]


def _cluster_sums(rows: torch.Tensor, assignment: torch.Tensor, n_clusters: int) -> torch.Tensor:
    if rows.device.type != "cpu":
        return torch.zeros((n_clusters, rows.shape[1]), device=rows.device).index_add_(0, assignment, rows)
    # On the CPU, index_add_ runs row by row (slow); sorting rows by cluster and summing each run
    # is fast and adds in a fixed order, so the result does not depend on threading.
    assignment_np = assignment.numpy()
    by_cluster = np.argsort(assignment_np, kind="stable")
    present, starts = np.unique(assignment_np[by_cluster], return_index=True)
    sums = np.zeros((n_clusters, rows.shape[1]), dtype=np.float32)
    sums[present] = np.add.reduceat(rows.numpy()[by_cluster], starts, axis=0)
    return torch.from_numpy(sums)


def _nearest(rows: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    similarity = torch.empty(len(rows), dtype=rows.dtype, device=rows.device)
    assignment = torch.empty(len(rows), dtype=torch.int64, device=rows.device)
    for start in range(0, len(rows), BLOCK_ROWS):
        stop = start + BLOCK_ROWS
        similarity[start:stop], assignment[start:stop] = (rows[start:stop] @ centroids.T).max(dim=1)
    return similarity, assignment


@dataclass
class _Probes:
    """Nearest cluster of every clip, and the clusters each clip searches (CSR: ptr, clusters)."""

    nearest: np.ndarray
    ptr: np.ndarray
    clusters: np.ndarray

    @classmethod
    def assign(cls, rows: torch.Tensor, centroids: torch.Tensor, margin: float, max_probes: int) -> _Probes:
        nearest = np.empty(len(rows), dtype=np.int32)
        counts = np.empty(len(rows), dtype=np.int64)
        chosen = []
        # Blocks of block × k similarities small enough to be recycled by the allocator: 16k-row
        # blocks (80 MB at k = 1225) were mapped afresh each time, a quarter of this step in page faults.
        for start in range(0, len(rows), ASSIGN_BLOCK_ROWS):
            stop = min(start + ASSIGN_BLOCK_ROWS, len(rows))
            similarity = rows[start:stop] @ centroids.T
            # A threshold below each row's maximum, not top-k: a vectorised max and one comparison
            # cost half as much as torch.topk over ~1000 centroids.
            floor = similarity.amax(dim=1, keepdim=True) - margin
            row, cluster = torch.nonzero(similarity >= floor, as_tuple=True)
            value = similarity[row, cluster].cpu().numpy()
            row, cluster = row.cpu().numpy(), cluster.cpu().numpy().astype(np.int32)
            # Most similar first within each row; beyond max_probes, the least similar are left out.
            by_row = np.lexsort((-value, row))
            row, cluster = row[by_row], cluster[by_row]
            row_start = np.searchsorted(row, row)
            searched = np.arange(len(row)) - row_start < max_probes
            row, cluster = row[searched], cluster[searched]
            nearest[start:stop] = cluster[np.flatnonzero(np.r_[True, row[1:] != row[:-1]])]
            counts[start:stop] = np.bincount(row, minlength=stop - start)
            chosen.append(cluster)
        ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return cls(nearest, ptr, np.concatenate(chosen))

    def pairs(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``clips``, cluster) for every cluster each clip searches, grouped by clip."""
        counts = self.ptr[clips + 1] - self.ptr[clips]
        position = np.repeat(np.arange(len(clips)), counts)
        first = np.repeat(self.ptr[clips] - (np.cumsum(counts) - counts), counts)
        return position, self.clusters[first + np.arange(len(position))]


class _KeptIndex:
    """Search-space rows of the kept clips, stored contiguously per nearest cluster.

    Each round multiplies against contiguous slices instead of re-gathering every kept row of the
    collection (rounds × n rows). Each cluster owns a region as large as its membership; only kept
    rows are written, so pages of dropped clips are never touched.
    """

    def __init__(self, nearest: np.ndarray, n_clusters: int, dim: int, device: torch.device):
        sizes = np.bincount(nearest, minlength=n_clusters)
        self.offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.count = np.zeros(n_clusters, dtype=np.int64)
        self.rows = torch.empty((len(nearest), dim), dtype=torch.float32, device=device)
        self.clip = np.full(len(nearest), -1, dtype=np.int64)

    def of_cluster(self, cluster: int) -> torch.Tensor:
        start = self.offset[cluster]
        return self.rows[start : start + self.count[cluster]]

    def add(self, clips: np.ndarray, clusters: np.ndarray, rows: torch.Tensor) -> None:
        by_cluster = np.argsort(clusters, kind="stable")
        sorted_clusters = clusters[by_cluster]
        group_start = np.searchsorted(sorted_clusters, sorted_clusters, side="left")
        slot = self.offset[sorted_clusters] + self.count[sorted_clusters] + np.arange(len(clips)) - group_start
        device = self.rows.device
        self.rows.index_copy_(0, torch.from_numpy(slot).to(device), rows[torch.from_numpy(by_cluster).to(device)])
        self.clip[slot] = clips[by_cluster]
        self.count += np.bincount(clusters, minlength=len(self.count))


@dataclass
class _Round:
    """Clips of one round (positions 0..R-1 in visiting order) with a search row per searched cluster.

    Each (clip, cluster it searches) pair has its own row in ``rows``, sorted by cluster; within a
    cluster, the clips whose nearest cluster it is (its members) come first, by position. A cluster's
    queries and its members are then contiguous slices of ``rows``: the products below need no
    per-cluster gathering, which on a shared 2-core machine cost more than the products themselves.
    """

    clips: np.ndarray
    nearest: np.ndarray
    pair_position: np.ndarray
    pair_cluster: np.ndarray
    rows: torch.Tensor
    cluster: np.ndarray
    query_start: np.ndarray
    member_stop: np.ndarray
    query_stop: np.ndarray
    member_row: np.ndarray

    @classmethod
    def gather(cls, clips: np.ndarray, probes: _Probes, search_rows: torch.Tensor) -> _Round:
        position, cluster = probes.pairs(clips)
        nearest = probes.nearest[clips]
        is_member = nearest[position] == cluster
        by_cluster = np.lexsort((position, ~is_member, cluster))
        position, cluster, is_member = position[by_cluster], cluster[by_cluster], is_member[by_cluster]
        starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
        member_row = np.empty(len(clips), dtype=np.int64)
        member_row[position[is_member]] = np.flatnonzero(is_member)
        return cls(
            clips=clips,
            nearest=nearest,
            pair_position=position,
            pair_cluster=cluster,
            rows=search_rows.index_select(0, torch.from_numpy(clips[position]).to(search_rows.device)),
            cluster=cluster[starts],
            query_start=starts,
            member_stop=starts + np.add.reduceat(is_member.astype(np.int64), starts),
            query_stop=np.r_[starts[1:], len(cluster)],
            member_row=member_row,
        )

    def rows_of(self, positions: np.ndarray) -> torch.Tensor:
        return self.rows.index_select(0, torch.from_numpy(self.member_row[positions]).to(self.rows.device))

    def clusters(self):
        """(cluster, first query row, end of its member rows, end of its query rows) per cluster."""
        return zip(self.cluster.tolist(), self.query_start.tolist(), self.member_stop.tolist(), self.query_stop.tolist())


class _RoundResolver:
    """The greedy rule for one round.

    Clips of earlier rounds are final and in ``_KeptIndex``; a clip of this round is first compared with
    those, then the rest with each other, recording per clip its earlier same-round candidates;
    walking the round in order then keeps a clip unless one of its confirmed candidates was kept.
    """

    def __init__(self, round_: _Round, space: SearchSpace, threshold: float, embeddings: _Embeddings, kept_index):
        self.round = round_
        self.space = space
        self.threshold = threshold
        self.embeddings = embeddings
        self.kept_index = kept_index
        size = len(round_.clips)
        self.kept = np.ones(size, dtype=bool)
        self.duplicate_of = np.full(size, -1, dtype=np.int64)
        self.similarity = np.full(size, np.nan, dtype=np.float32)

    def _confirmed(self, positions: np.ndarray, others: np.ndarray, searched: np.ndarray) -> np.ndarray:
        """Cosines of candidate pairs (clips given by round position / global index) in full dimension."""
        if not self.space.projected:
            return searched
        return self.embeddings.exact_cosines(self.round.clips[positions], others)

    def against_earlier_rounds(self) -> None:
        if not self.kept_index.count.any():
            return
        r = self.round
        found_position, found_clip, found_similarity = [], [], []
        for cluster, start, _, stop in r.clusters():
            kept_rows = self.kept_index.of_cluster(cluster)
            if len(kept_rows) == 0:
                continue
            similarity = r.rows[start:stop] @ kept_rows.T
            # Most blocks hold no candidate; their maximum (one fast reduction) says so.
            if float(similarity.amax()) < self.space.candidate_threshold:
                continue
            query, kept_at = torch.nonzero(similarity >= self.space.candidate_threshold, as_tuple=True)
            found_similarity.append(similarity[query, kept_at].cpu().numpy())
            found_position.append(r.pair_position[start + query.cpu().numpy()])
            found_clip.append(self.kept_index.clip[self.kept_index.offset[cluster] + kept_at.cpu().numpy()])
        if not found_position:
            return
        position, clip = np.concatenate(found_position), np.concatenate(found_clip)
        cosine = self._confirmed(position, clip, np.concatenate(found_similarity))
        # Sorted by (position, -cosine), each clip's first pair is its most similar kept clip.
        best_first = np.lexsort((-cosine, position))
        position, clip, cosine = position[best_first], clip[best_first], cosine[best_first]
        drop = np.r_[True, position[1:] != position[:-1]] & (cosine >= self.threshold)
        self.kept[position[drop]] = False
        self.duplicate_of[position[drop]] = clip[drop]
        self.similarity[position[drop]] = cosine[drop]

    def within_round(self) -> None:
        r = self.round
        if not self.kept.any():
            return
        undecided_pair = self.kept[r.pair_position]
        device = r.rows.device
        found_query, found_member, found_similarity, truncated = [], [], [], []
        for _, start, member_stop, stop in r.clusters():
            if member_stop == start:
                continue
            query_ok = undecided_pair[start:stop]
            gathered = np.count_nonzero(query_ok) < len(query_ok) // 2
            if not gathered:
                query_rows, member_rows = r.rows[start:stop], r.rows[start:member_stop]
                query_at, member_at = r.pair_position[start:stop], r.pair_position[start:member_stop]
            else:
                # Mostly dropped already (a dense group meeting its kept members from earlier rounds):
                # gathering the few undecided rows keeps the group from costing (group size)² here.
                query_pairs = start + np.flatnonzero(query_ok)
                member_pairs = query_pairs[query_pairs < member_stop]
                if len(member_pairs) == 0:
                    continue
                query_rows = r.rows.index_select(0, torch.from_numpy(query_pairs).to(device))
                member_rows = query_rows[: len(member_pairs)]
                query_at, member_at = r.pair_position[query_pairs], r.pair_position[member_pairs]
            if member_at[0] >= query_at.max():
                continue  # every member comes after every query: nothing earlier to compare with
            similarity = query_rows @ member_rows.T
            # Members lead the query rows in the same order, so the diagonal is each member against itself.
            similarity.diagonal().fill_(-2.0)
            if float(similarity.amax()) < self.space.candidate_threshold:
                continue
            member_t = torch.from_numpy(member_at).to(device)
            query_t = torch.from_numpy(query_at).to(device)
            candidate = (similarity >= self.space.candidate_threshold) & (member_t[None, :] < query_t[:, None])
            if not gathered:
                candidate &= torch.from_numpy(query_ok).to(device)[:, None]
                candidate &= torch.from_numpy(query_ok[: len(member_at)]).to(device)[None, :]
            running = candidate.cumsum(dim=1)
            recorded = candidate & (running <= CANDIDATES_PER_CLIP)
            truncated.append(query_at[(running[:, -1] > CANDIDATES_PER_CLIP).cpu().numpy()])
            q, m = torch.nonzero(recorded, as_tuple=True)
            found_query.append(query_at[q.cpu().numpy()])
            found_member.append(member_at[m.cpu().numpy()])
            found_similarity.append(similarity[q, m].cpu().numpy())
        if not found_query:
            return
        query, member = np.concatenate(found_query), np.concatenate(found_member)
        cosine = self._confirmed(query, r.clips[member], np.concatenate(found_similarity))
        confirmed = cosine >= self.threshold
        self._walk(query[confirmed], member[confirmed], cosine[confirmed], set(np.concatenate(truncated).tolist()))

    def _walk(self, query, member, cosine, truncated: set[int]) -> None:
        # Positions are the visiting order and candidates come earlier, so each candidate is final
        # by the time its query is reached.
        order = np.lexsort((-cosine, query))
        query, member, cosine = query[order], member[order], cosine[order]
        starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])[: len(query)]
        stops = np.r_[starts[1:], len(query)][: len(starts)]
        candidates_of = dict(zip(query[starts].tolist(), zip(starts.tolist(), stops.tolist())))
        # Truncated clips take part even when none of their recorded candidates was confirmed.
        for position in sorted(candidates_of.keys() | truncated):
            start, stop = candidates_of.get(position, (0, 0))
            alive = np.flatnonzero(self.kept[member[start:stop]])
            if len(alive):
                best = start + int(alive[0])
                self._drop(position, int(member[best]), float(cosine[best]))
            elif position in truncated:
                self.fallback(position)

    def fallback(self, position: int) -> None:
        """Exact check of a clip whose recorded candidates were all dropped but which had more."""
        r = self.round
        searched = r.pair_cluster[r.pair_position == position]
        earlier_kept = np.flatnonzero(self.kept[:position] & np.isin(r.nearest[:position], searched))
        if len(earlier_kept) == 0:
            return
        cosines = self.embeddings.exact_cosines(r.clips[earlier_kept], np.full(len(earlier_kept), r.clips[position]))
        best = int(np.argmax(cosines))
        if cosines[best] >= self.threshold:
            self._drop(position, int(earlier_kept[best]), float(cosines[best]))

    def _drop(self, position: int, kept_position: int, similarity: float) -> None:
        self.kept[position] = False
        self.duplicate_of[position] = self.round.clips[kept_position]
        self.similarity[position] = similarity


def _round_bounds(pairs_per_clip: np.ndarray, round_rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges of visiting positions, each with about ``round_rows`` (clip, cluster) pairs."""
    cumulative = np.cumsum(pairs_per_clip)
    bounds, start, size = [], 0, min(FIRST_ROUND_ROWS, round_rows)
    while start < len(pairs_per_clip):
        done = cumulative[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cumulative, done + size, side="right")))
        bounds.append((start, stop))
        start = stop
        size = min(size * 2, round_rows)
    return bounds


def default_cluster_count(n: int) -> int:
    return max(1, min(n, round(math.sqrt(1.5 * n))))


def semantic_dedup(
    embeddings,
    priority: np.ndarray | None = None,
    config: DedupConfig = DedupConfig(),
    *,
    centroids: np.ndarray | None = None,
) -> DedupResult:
    """Greedy semantic de-duplication of ``embeddings`` (n × d; rows need not be unit-norm).

    Clips are visited in ``priority`` order (smallest first; None = index order). A clip is dropped
    when its cosine similarity to an earlier kept clip is ≥ 1 − eps, and names the most similar such
    clip found. Clips are visited in rounds of consecutive priority: each clip is compared with the
    kept clips of earlier rounds in the clusters it searches, then with earlier clips of its own round.

    Memory beyond the input: the rows in the search space (n × 128 float32 by default) and the kept
    ones among them, one round of search rows, O(n) bookkeeping; no n × n matrix, and the input is
    read in blocks and gathered by row, never copied whole. The result is the same for the same
    input, config and torch thread count. On a shared CPU, set OMP_WAIT_POLICY=PASSIVE before torch
    loads: the many mid-size products otherwise spin on descheduled threads.
    """
    device = torch.device(config.device)
    embeddings_ = _Embeddings(embeddings, device)
    n, dim = embeddings_.n, embeddings_.dim
    order = visit_order(priority, n)
    space = SearchSpace.for_config(config, dim)
    embeddings_.measure()
    search_rows = embeddings_.search_rows(space, config.seed)
    if centroids is not None:
        fitted = np.asarray(centroids, dtype=np.float32)
        if fitted.ndim != 2 or fitted.shape[1] != space.dim or len(fitted) == 0:
            raise ValueError(f"centroids must have shape (k ≥ 1, {space.dim}), got {fitted.shape}")
        if not np.isfinite(fitted).all() or (np.linalg.norm(fitted, axis=1) == 0).any():
            raise ValueError("centroids must be finite and non-zero")
        centroid_rows = _normalise(torch.from_numpy(fitted).to(device))
    elif n == 0:
        centroid_rows = torch.zeros((0, space.dim), device=device)
    else:
        n_clusters = min(n, config.n_clusters) if config.n_clusters else default_cluster_count(n)
        centroid_rows = _fit_centroids(search_rows, n_clusters, config)

    kept = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    if n == 0:
        return DedupResult(kept, duplicate_of, similarity, np.zeros(0, np.int32), centroid_rows.cpu().numpy(), 0.0)

    probes = _Probes.assign(search_rows, centroid_rows, space.probe_margin, config.max_probes)
    kept_index = _KeptIndex(probes.nearest, len(centroid_rows), space.dim, device)
    round_rows = config.round_rows or max(1, ROUND_BYTES // (4 * space.dim))
    pairs_per_clip = probes.ptr[order + 1] - probes.ptr[order]
    for start, stop in _round_bounds(pairs_per_clip, round_rows):
        round_ = _Round.gather(order[start:stop], probes, search_rows)
        resolver = _RoundResolver(round_, space, config.threshold, embeddings_, kept_index)
        resolver.against_earlier_rounds()
        resolver.within_round()
        clips = round_.clips
        kept[clips] = resolver.kept
        duplicate_of[clips] = resolver.duplicate_of
        similarity[clips] = resolver.similarity
        kept_positions = np.flatnonzero(resolver.kept)
        kept_index.add(clips[kept_positions], round_.nearest[kept_positions], round_.rows_of(kept_positions))
        del round_, resolver
    np.clip(similarity, -1.0, 1.0, out=similarity)
    mean_probes = float(probes.ptr[-1] / n)
    return DedupResult(kept, duplicate_of, similarity, probes.nearest, centroid_rows.cpu().numpy(), mean_probes)
