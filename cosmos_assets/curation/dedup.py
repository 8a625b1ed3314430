"""De-duplication of curated clips: exact (same content hash) and semantic (SemDeDup-style).

Semantic de-duplication follows SemDeDup (k-means over clip embeddings; a clip is dropped when its
cosine similarity to an already kept clip exceeds 1 − eps), with two deliberate differences:

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

No Dagster here; the assets call these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Float32 rounding in the cosine of two unit vectors is ~1e-7..1e-6; with this allowance eps = 0 still
# drops clips whose embeddings point in the same direction instead of depending on rounding.
COSINE_ROUNDING = 1e-5
# Within one round a clip records at most this many earlier same-round candidates (the earliest).
# A batch of thousands of identical clips would otherwise produce group² candidate pairs; the earliest
# members of such a group are the ones the greedy rule keeps, so the cap rarely loses information, and
# where it might the clip is re-checked exactly (``_RoundResolver.fallback``).
CANDIDATES_PER_CLIP = 16
# Rounds start small and double up to ``DedupConfig.round_rows``: comparisons with clips of the same
# round cost (round size)² when they are all one dense group, while later rounds only meet the few
# kept members of such a group.
FIRST_ROUND_ROWS = 4096
ASSIGN_BLOCK_ROWS = 16384
KMEANS_SAMPLE_PER_CLUSTER = 24


@dataclass(frozen=True)
class DedupConfig:
    """Settings of ``semantic_dedup``.

    eps: a clip is dropped when its cosine similarity to an earlier kept clip is ≥ 1 − eps (the
        Cosmos cookbook uses 0.01; Open-Sora's cosine ≥ 0.98 is eps = 0.02). eps = 0 drops only clips
        pointing in exactly the same direction.
    n_clusters: k-means clusters; None picks about sqrt(1.5 n), which balances the cost of assigning
        every clip to the centroids (∝ n·k) against comparing clips within clusters (∝ n²/k).
    kmeans_iterations, kmeans_sample: Lloyd iterations on a random sample of this many clips (None:
        24 per cluster); the clustering only needs to group near-duplicates, not to converge.
    probe_margin: a clip is compared with the kept clips of every cluster whose centroid similarity is
        within this margin of its best one. None derives it from eps and the dimension d as
        4·sqrt(eps/d): a near-duplicate at cosine 1 − eps differs from its original by a vector of
        length sqrt(2·eps), which shifts its similarity to two centroids by a difference with standard
        deviation 2·sqrt(eps/d) when the difference points in no particular direction; the margin is
        two of those. Measured on 768-d isotropic data it misses under 0.05 % of pairs at cosine 0.995
        with about 3 clusters searched per clip, where searching only the two nearest clusters misses
        3.7 % (only the nearest: 15 %). Real embeddings, with clearer cluster structure, probe fewer
        clusters for the same margin; a larger margin buys recall for near-duplicate differences that
        are aligned with cluster boundaries.
    max_probes: at most this many clusters searched per clip (bounds the cost of clips lying amid
        many centroids).
    round_rows: (clip, searched cluster) pairs per round; each is a row of d float32 in the round's
        buffer, so this bounds that buffer (default: 192k rows, 576 MiB at d = 768).
    seed: k-means sample and initialisation.
    device: torch device for the matrix products ("cpu", "cuda", "cuda:1", ...).
    """

    eps: float = 0.01
    n_clusters: int | None = None
    kmeans_iterations: int = 8
    kmeans_sample: int | None = None
    probe_margin: float | None = None
    max_probes: int = 16
    round_rows: int = 196608
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must be in [0, 1), got {self.eps}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"n_clusters must be at least 1, got {self.n_clusters}")
        if self.kmeans_iterations < 0:
            raise ValueError(f"kmeans_iterations must be ≥ 0, got {self.kmeans_iterations}")
        if self.kmeans_sample is not None and self.kmeans_sample < 1:
            raise ValueError(f"kmeans_sample must be at least 1, got {self.kmeans_sample}")
        if self.probe_margin is not None and not self.probe_margin >= 0.0:
            raise ValueError(f"probe_margin must be ≥ 0, got {self.probe_margin}")
        if self.max_probes < 1:
            raise ValueError(f"max_probes must be at least 1, got {self.max_probes}")
        if self.round_rows < 1:
            raise ValueError(f"round_rows must be at least 1, got {self.round_rows}")

    @property
    def threshold(self) -> float:
        return 1.0 - self.eps - COSINE_ROUNDING

    def margin_for(self, dim: int) -> float:
        if self.probe_margin is not None:
            return self.probe_margin
        return 4.0 * math.sqrt(self.eps / max(dim, 1))


@dataclass(frozen=True)
class DedupResult:
    """Per clip (in input order): kept or not, and for a dropped clip the kept clip it duplicates.

    kept: bool[n].
    duplicate_of: int64[n], -1 for kept clips; otherwise the index of a kept clip of higher priority
        whose cosine similarity to this one is ≥ 1 − eps.
    similarity: float32[n], that cosine similarity; NaN for kept clips.
    cluster: int32[n], the nearest k-means cluster.
    centroids: float32[k, d], unit-norm; pass them back as ``semantic_dedup(..., centroids=...)`` to
        search a grown collection with the same clusters, which leaves every earlier decision exactly
        as it was (with fresh clusters they stay unchanged up to the search's recall).
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
    if priority.dtype.kind == "f" and np.isnan(priority).any():
        raise ValueError(f"priority has NaN at index {int(np.flatnonzero(np.isnan(priority))[0])}")
    if priority.dtype.kind not in "biufmM":
        raise ValueError(f"priority must be numeric or datetime, got dtype {priority.dtype}")
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


class _EmbeddingRows:
    """Unit-normalised float32 rows of the caller's array, gathered on demand without copying it whole."""

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
        # A C-contiguous float32 array is gathered by torch without an intermediate copy; anything else
        # (float64, memmaps with strides) goes through numpy fancy indexing per block.
        self.torch_view = (
            torch.from_numpy(array)
            if array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
            else None
        )
        self.inverse_norm = torch.empty(0)

    def _raw_block(self, start: int, stop: int) -> torch.Tensor:
        if self.torch_view is not None:
            return self.torch_view[start:stop]
        return torch.from_numpy(np.ascontiguousarray(self.array[start:stop], dtype=np.float32))

    def _raw_rows(self, indices: np.ndarray) -> torch.Tensor:
        if self.torch_view is not None:
            return self.torch_view.index_select(0, torch.from_numpy(indices))
        return torch.from_numpy(np.ascontiguousarray(self.array[indices], dtype=np.float32))

    def validate_and_measure(self) -> None:
        """Row norms, rejecting rows that cannot be normalised (zero, NaN, infinite)."""
        inverse = torch.empty(self.n, dtype=torch.float32)
        for start in range(0, self.n, ASSIGN_BLOCK_ROWS):
            stop = min(start + ASSIGN_BLOCK_ROWS, self.n)
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

    def block(self, start: int, stop: int) -> torch.Tensor:
        rows = self._raw_block(start, stop) * self.inverse_norm[start:stop, None]
        return rows.to(self.device)

    def rows(self, indices: np.ndarray) -> torch.Tensor:
        selected = torch.from_numpy(indices)
        rows = self._raw_rows(indices).mul_(self.inverse_norm.index_select(0, selected)[:, None])
        return rows.to(self.device)


def _normalise(matrix: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(matrix, dim=1)


def _fit_centroids(source: _EmbeddingRows, n_clusters: int, config: DedupConfig) -> torch.Tensor:
    """Spherical k-means (cosine) on a random sample of the rows."""
    rng = np.random.default_rng(config.seed)
    sample_size = config.kmeans_sample or KMEANS_SAMPLE_PER_CLUSTER * n_clusters
    sample_size = min(source.n, max(sample_size, n_clusters))
    sample = source.rows(np.sort(rng.choice(source.n, sample_size, replace=False)))
    centroids = sample[torch.from_numpy(rng.choice(sample_size, n_clusters, replace=False))].clone()
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
    usable = torch.linalg.vector_norm(centroids, dim=1) > 0.5
    centroids = centroids[usable]
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
    for start in range(0, len(rows), ASSIGN_BLOCK_ROWS):
        stop = start + ASSIGN_BLOCK_ROWS
        similarity[start:stop], assignment[start:stop] = (rows[start:stop] @ centroids.T).max(dim=1)
    return similarity, assignment


@dataclass
class _Probes:
    """Nearest cluster of every clip, and the clusters each clip searches (CSR: ptr, clusters)."""

    nearest: np.ndarray
    ptr: np.ndarray
    clusters: np.ndarray

    def pairs(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``clips``, cluster) for every cluster each clip searches, grouped by clip."""
        counts = self.ptr[clips + 1] - self.ptr[clips]
        position = np.repeat(np.arange(len(clips)), counts)
        first = np.repeat(self.ptr[clips] - (np.cumsum(counts) - counts), counts)
        return position, self.clusters[first + np.arange(len(position))]


def _assign(source: _EmbeddingRows, centroids: torch.Tensor, margin: float, max_probes: int) -> _Probes:
    n_clusters = len(centroids)
    width = min(max_probes, n_clusters)
    nearest = np.empty(source.n, dtype=np.int32)
    counts = np.empty(source.n, dtype=np.int64)
    chosen = []
    for start in range(0, source.n, ASSIGN_BLOCK_ROWS):
        stop = min(start + ASSIGN_BLOCK_ROWS, source.n)
        top = torch.topk(source.block(start, stop) @ centroids.T, width, dim=1, sorted=True)
        within = (top.values >= top.values[:, :1] - margin).cpu()
        clusters = top.indices.cpu()
        nearest[start:stop] = clusters[:, 0].numpy()
        counts[start:stop] = within.sum(dim=1).numpy()
        chosen.append(clusters[within].numpy().astype(np.int32))
    ptr = np.zeros(source.n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return _Probes(nearest, ptr, np.concatenate(chosen))


class _KeptIndex:
    """Unit rows of the kept clips, stored contiguously per nearest cluster.

    Holding them costs at most one copy of the input, but each round then multiplies against
    contiguous slices instead of re-gathering every kept row of the collection (rounds × n rows).
    Each cluster owns a region as large as its membership; only kept rows are ever written, so pages
    of dropped clips are never touched.
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
    """Clips of one round (positions 0..R-1 in visiting order) with a unit row per searched cluster.

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
    def gather(cls, clips: np.ndarray, probes: _Probes, source: _EmbeddingRows) -> _Round:
        position, cluster = probes.pairs(clips)
        nearest = probes.nearest[clips]
        is_member = nearest[position] == cluster
        by_cluster = np.lexsort((position, ~is_member, cluster))
        position, cluster, is_member = position[by_cluster], cluster[by_cluster], is_member[by_cluster]
        starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
        stops = np.r_[starts[1:], len(cluster)]
        member_row = np.empty(len(clips), dtype=np.int64)
        member_row[position[is_member]] = np.flatnonzero(is_member)
        return cls(
            clips=clips,
            nearest=nearest,
            pair_position=position,
            pair_cluster=cluster,
            rows=source.rows(clips[position]),
            cluster=cluster[starts],
            query_start=starts,
            member_stop=starts + np.add.reduceat(is_member.astype(np.int64), starts),
            query_stop=stops,
            member_row=member_row,
        )

    def rows_of(self, positions: np.ndarray) -> torch.Tensor:
        return self.rows.index_select(0, torch.from_numpy(self.member_row[positions]).to(self.rows.device))


class _RoundResolver:
    """The greedy rule for one round.

    Clips of earlier rounds are final and in ``_KeptIndex``; a clip of this round is first compared with
    those, then the rest with each other, recording per clip its earlier same-round candidates above
    the threshold; walking the round in order then keeps a clip unless one of its candidates was kept.
    """

    def __init__(self, round_: _Round, threshold: float, kept_index: _KeptIndex):
        self.round = round_
        self.threshold = threshold
        self.kept_index = kept_index
        size = len(round_.clips)
        self.kept = np.ones(size, dtype=bool)
        self.duplicate_of = np.full(size, -1, dtype=np.int64)
        self.similarity = np.full(size, np.nan, dtype=np.float32)

    def _clusters(self):
        r = self.round
        return zip(r.cluster.tolist(), r.query_start.tolist(), r.member_stop.tolist(), r.query_stop.tolist())

    def against_earlier_rounds(self) -> None:
        if not self.kept_index.count.any():
            return
        r = self.round
        pair_similarity = np.full(len(r.pair_position), -np.inf, dtype=np.float32)
        pair_slot = np.full(len(r.pair_position), -1, dtype=np.int64)
        for cluster, start, _, stop in self._clusters():
            kept_rows = self.kept_index.of_cluster(cluster)
            if len(kept_rows) == 0:
                continue
            best, best_at = (r.rows[start:stop] @ kept_rows.T).max(dim=1)
            pair_similarity[start:stop] = best.cpu().numpy()
            pair_slot[start:stop] = best_at.cpu().numpy() + self.kept_index.offset[cluster]
        # Sorting by (position, -similarity) puts each clip's best pair first in its group.
        best_first = np.lexsort((-pair_similarity, r.pair_position))
        by_position = r.pair_position[best_first]
        first_of_clip = best_first[np.r_[0, np.flatnonzero(by_position[1:] != by_position[:-1]) + 1]]
        best_similarity = pair_similarity[first_of_clip]
        duplicate = best_similarity >= self.threshold
        self.kept[duplicate] = False
        self.duplicate_of[duplicate] = self.kept_index.clip[pair_slot[first_of_clip][duplicate]]
        self.similarity[duplicate] = best_similarity[duplicate]

    def within_round(self) -> None:
        r = self.round
        if not self.kept.any():
            return
        undecided_pair = self.kept[r.pair_position]
        device = r.rows.device
        found_query, found_member, found_similarity, truncated = [], [], [], []
        for _, start, member_stop, stop in self._clusters():
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
            if float(similarity.max()) < self.threshold:
                continue
            member_t = torch.from_numpy(member_at).to(device)
            query_t = torch.from_numpy(query_at).to(device)
            candidate = (similarity >= self.threshold) & (member_t[None, :] < query_t[:, None])
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
        self._walk(
            np.concatenate(found_query),
            np.concatenate(found_member),
            np.concatenate(found_similarity),
            set(np.concatenate(truncated).tolist()),
        )

    def _walk(self, query, member, similarity, truncated: set[int]) -> None:
        # Positions are the visiting order and candidates come earlier, so each candidate is final
        # by the time its query is reached.
        order = np.lexsort((-similarity, query))
        query, member, similarity = query[order], member[order], similarity[order]
        starts = np.r_[0, np.flatnonzero(np.diff(query)) + 1]
        stops = np.r_[starts[1:], len(query)]
        for start, stop in zip(starts.tolist(), stops.tolist()):
            position = int(query[start])
            alive = np.flatnonzero(self.kept[member[start:stop]])
            if len(alive):
                best = start + int(alive[0])
                self._drop(position, int(member[best]), float(similarity[best]))
            elif position in truncated:
                self.fallback(position)

    def fallback(self, position: int) -> None:
        """Exact check of a clip whose recorded candidates were all dropped but which had more."""
        r = self.round
        searched = r.pair_cluster[r.pair_position == position]
        earlier_kept = np.flatnonzero(self.kept[:position] & np.isin(r.nearest[:position], searched))
        if len(earlier_kept) == 0:
            return
        similarity = r.rows_of(earlier_kept) @ r.rows[r.member_row[position]]
        best_similarity, best = similarity.max(dim=0)
        if float(best_similarity) >= self.threshold:
            self._drop(position, int(earlier_kept[int(best)]), float(best_similarity))

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

    Memory beyond the input: the kept rows (at most one float32 copy of it), one round of rows, and
    O(n) bookkeeping; no n × n matrix. The input is read in blocks and never normalised as a whole.
    The result is the same for the same input, config and torch thread count.
    """
    device = torch.device(config.device)
    source = _EmbeddingRows(embeddings, device)
    n, dim = source.n, source.dim
    order = visit_order(priority, n)
    source.validate_and_measure()
    if centroids is not None:
        fitted = np.asarray(centroids, dtype=np.float32)
        if fitted.ndim != 2 or fitted.shape[1] != dim or len(fitted) == 0:
            raise ValueError(f"centroids must have shape (k ≥ 1, {dim}), got {fitted.shape}")
        if not np.isfinite(fitted).all() or (np.linalg.norm(fitted, axis=1) == 0).any():
            raise ValueError("centroids must be finite and non-zero")
        centroid_rows = _normalise(torch.from_numpy(fitted).to(device))
    elif n == 0:
        centroid_rows = torch.zeros((0, dim), device=device)
    else:
        n_clusters = min(n, config.n_clusters) if config.n_clusters else default_cluster_count(n)
        centroid_rows = _fit_centroids(source, n_clusters, config)
    n_clusters = len(centroid_rows)

    kept = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    if n == 0:
        return DedupResult(kept, duplicate_of, similarity, np.zeros(0, np.int32), centroid_rows.cpu().numpy(), 0.0)

    probes = _assign(source, centroid_rows, config.margin_for(dim), config.max_probes)
    kept_index = _KeptIndex(probes.nearest, n_clusters, dim, device)
    pairs_per_clip = probes.ptr[order + 1] - probes.ptr[order]
    for start, stop in _round_bounds(pairs_per_clip, config.round_rows):
        round_ = _Round.gather(order[start:stop], probes, source)
        resolver = _RoundResolver(round_, config.threshold, kept_index)
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
