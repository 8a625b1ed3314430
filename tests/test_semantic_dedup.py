"""Specifications of exact and semantic de-duplication (cosmos_assets.curation.dedup)."""

import dataclasses

import numpy as np
import pytest
import torch

from cosmos_assets.curation.dedup import (
    CANDIDATES_PER_CLIP,
    DedupConfig,
    SearchSpace,
    exact_duplicates,
    semantic_dedup,
)

# The search either runs on the embeddings themselves or on a random projection (the default for
# d > 128); the data here is small, so the projected runs ask for 16 or 32 dimensions explicitly.
FULL, PROJECTED = DedupConfig(search_dim=None), DedupConfig(search_dim=16)
BOTH_SPACES = pytest.mark.parametrize("config", [FULL, PROJECTED], ids=["full", "projected"])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny products: a second thread only adds synchronisation, which a busy machine makes slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return unit(rng.standard_normal((n, dim)))


def noisy_copy(rng: np.random.Generator, rows: np.ndarray, cosine: float) -> np.ndarray:
    """Copies of unit ``rows`` at (about) the given cosine, the noise in a random direction."""
    noise = rng.standard_normal(rows.shape)
    noise -= np.sum(noise * rows, axis=1, keepdims=True) * rows
    noise = unit(noise)
    return unit(cosine * rows + np.sqrt(1 - cosine**2) * noise)


def with_planted_copies(rng, n_distinct: int, n_copies: int, dim: int, cosine: float = 0.995):
    """Distinct unit vectors, then noisy copies of some of them shuffled in; returns (rows, original_of)."""
    distinct = random_unit(rng, n_distinct, dim)
    sources = rng.choice(n_distinct, n_copies, replace=False)
    rows = np.concatenate([distinct, noisy_copy(rng, distinct[sources], cosine)])
    original_of = np.concatenate([np.full(n_distinct, -1), sources])
    shuffle = rng.permutation(len(rows))
    new_position = np.argsort(shuffle)
    original_of = original_of[shuffle]
    has_original = original_of >= 0
    original_of[has_original] = new_position[original_of[has_original]]
    return rows[shuffle], original_of


def greedy_reference(rows: np.ndarray, priority: np.ndarray, eps: float) -> np.ndarray:
    """The rule by brute force: visit by priority, drop a row close to any kept earlier row."""
    rows = unit(rows)
    kept = np.zeros(len(rows), dtype=bool)
    for index in np.argsort(priority, kind="stable"):
        earlier_kept = np.flatnonzero(kept)
        if len(earlier_kept) == 0 or (rows[earlier_kept] @ rows[index]).max() < 1 - eps - 1e-5:
            kept[index] = True
    return kept


def assert_consistent(result, rows: np.ndarray, priority: np.ndarray, eps: float) -> None:
    """Every dropped row names a kept, higher-priority row at cosine ≥ 1 − eps, with that cosine."""
    dropped = np.flatnonzero(~result.kept)
    named = result.duplicate_of[dropped]
    assert (result.duplicate_of[result.kept] == -1).all()
    assert np.isnan(result.similarity[result.kept]).all()
    assert result.kept[named].all()
    assert (priority[named] <= priority[dropped]).all()
    rows = unit(rows)
    cosine = np.sum(rows[dropped] * rows[named], axis=1)
    assert (cosine >= 1 - eps - 1e-5).all()
    np.testing.assert_allclose(result.similarity[dropped], cosine, atol=1e-5)


@BOTH_SPACES
def test_planted_near_duplicates_are_dropped_and_name_their_original(config):
    rng = np.random.default_rng(1)
    rows, original_of = with_planted_copies(rng, n_distinct=3000, n_copies=300, dim=64)
    priority = np.arange(len(rows))
    result = semantic_dedup(rows, priority, config)

    pairs = np.flatnonzero(original_of >= 0)
    partner = original_of[pairs]
    later = np.maximum(pairs, partner)
    earlier = np.minimum(pairs, partner)
    assert result.n_dropped == len(pairs)
    assert not result.kept[later].any()
    assert result.kept[earlier].all()
    np.testing.assert_array_equal(result.duplicate_of[later], earlier)
    assert_consistent(result, rows, priority, eps=0.01)


def test_distinct_vectors_are_all_kept():
    rows = random_unit(np.random.default_rng(2), 4000, 64)
    result = semantic_dedup(rows)
    assert result.kept.all()
    assert (result.duplicate_of == -1).all()
    assert result.cluster.shape == (4000,)
    assert result.centroids.shape[1] == 64


def test_the_higher_priority_member_of_a_pair_is_kept_whatever_its_position():
    rng = np.random.default_rng(3)
    originals = random_unit(rng, 500, 32)
    copies = noisy_copy(rng, originals, 0.995)
    rows = np.concatenate([originals, copies])
    # Copies come first in the array but were ingested earlier, i.e. have the smaller priority.
    ingest_time = np.concatenate([np.arange(500) + 1000.0, np.arange(500) + 0.5])
    result = semantic_dedup(rows, ingest_time)
    assert result.kept[500:].all()
    assert not result.kept[:500].any()
    np.testing.assert_array_equal(result.duplicate_of[:500], np.arange(500, 1000))


@BOTH_SPACES
def test_matches_the_brute_force_greedy_rule_on_chains_and_groups(config):
    rng = np.random.default_rng(4)
    base = random_unit(rng, 400, 32)
    first = noisy_copy(rng, base[:150], 0.993)
    # Copies of copies form chains: a–b and b–c close, a–c possibly not; the greedy rule decides by order.
    second = noisy_copy(rng, first[:80], 0.993)
    groups = np.repeat(base[150:170], 6, axis=0)
    rows = np.concatenate([base, first, second, noisy_copy(rng, groups, 0.997)])
    priority = rng.permutation(len(rows))
    result = semantic_dedup(rows, priority, config)
    np.testing.assert_array_equal(result.kept, greedy_reference(rows, priority, eps=0.01))
    assert_consistent(result, rows, priority, eps=0.01)


@BOTH_SPACES
def test_round_size_does_not_change_the_decisions(config):
    rng = np.random.default_rng(5)
    rows, _ = with_planted_copies(rng, n_distinct=1500, n_copies=200, dim=32)
    whole = semantic_dedup(rows, config=config)
    in_rounds_of_50 = semantic_dedup(rows, config=dataclasses.replace(config, round_rows=50))
    np.testing.assert_array_equal(whole.kept, in_rounds_of_50.kept)
    np.testing.assert_array_equal(whole.duplicate_of, in_rounds_of_50.duplicate_of)


@BOTH_SPACES
@pytest.mark.parametrize("same_clusters", [False, True], ids=["fresh k-means", "earlier centroids"])
def test_later_clips_duplicating_old_ones_are_dropped_and_old_decisions_stand(same_clusters, config):
    rng = np.random.default_rng(6)
    last_week, _ = with_planted_copies(rng, n_distinct=2000, n_copies=150, dim=48)
    before = semantic_dedup(last_week, config=config)

    old_kept = np.flatnonzero(before.kept)
    echoes = noisy_copy(rng, last_week[old_kept[:200]], 0.996)
    today = np.concatenate([echoes, random_unit(rng, 500, 48)])
    collection = np.concatenate([last_week, today])
    centroids = before.centroids if same_clusters else None
    after = semantic_dedup(collection, np.arange(len(collection)), config, centroids=centroids)

    n_old = len(last_week)
    np.testing.assert_array_equal(after.kept[:n_old], before.kept)
    np.testing.assert_array_equal(after.duplicate_of[:n_old], before.duplicate_of)
    assert not after.kept[n_old : n_old + 200].any()
    np.testing.assert_array_equal(after.duplicate_of[n_old : n_old + 200], old_kept[:200])
    assert after.kept[n_old + 200 :].all()


def test_a_pair_split_across_clusters_is_still_found():
    rng = np.random.default_rng(7)
    dim = 64
    a, b = np.eye(dim, dtype=np.float32)[:2]
    cluster_a = noisy_copy(rng, np.tile(a, (300, 1)), 0.9)
    cluster_b = noisy_copy(rng, np.tile(b, (300, 1)), 0.9)
    # Two clips either side of the bisector of a and b: 0.04 rad apart (cosine 0.9992), each nearer
    # to its own side's centroid.
    x = unit(np.cos(np.pi / 4 - 0.02) * a + np.sin(np.pi / 4 - 0.02) * b)
    y = unit(np.cos(np.pi / 4 + 0.02) * a + np.sin(np.pi / 4 + 0.02) * b)
    rows = np.concatenate([x[None], cluster_a, cluster_b, y[None]])
    config = DedupConfig(n_clusters=2, kmeans_iterations=10)

    result = semantic_dedup(rows, config=config)
    assert result.cluster[0] != result.cluster[-1], "the construction must split the pair"
    assert not result.kept[-1]
    assert result.duplicate_of[-1] == 0

    # Searching only each clip's own cluster (plain SemDeDup) misses it: the split is real.
    own_cluster_only = semantic_dedup(rows, config=DedupConfig(n_clusters=2, kmeans_iterations=10, max_probes=1))
    assert own_cluster_only.kept[-1]


def pair_at_cosine(cosine: float, dim: int = 16) -> np.ndarray:
    first = np.eye(dim, dtype=np.float32)[0]
    second = cosine * first + np.sqrt(1 - cosine**2) * np.eye(dim, dtype=np.float32)[1]
    return np.stack([first, second])


@pytest.mark.parametrize("dim", [16, 256], ids=["full", "projected to 128"])
def test_eps_sets_the_threshold(dim):
    rng = np.random.default_rng(8)
    rows = np.concatenate([pair_at_cosine(0.985, dim), random_unit(rng, 200, dim)])
    loose = semantic_dedup(rows, config=DedupConfig(eps=0.02))
    strict = semantic_dedup(rows, config=DedupConfig(eps=0.01))
    assert not loose.kept[1] and loose.duplicate_of[1] == 0
    assert loose.similarity[1] == pytest.approx(0.985, abs=1e-5)
    assert strict.kept[1]


def test_eps_zero_drops_only_the_same_direction():
    rng = np.random.default_rng(9)
    base = random_unit(rng, 3, 16)
    rows = np.concatenate([base, 3.0 * base[:1], pair_at_cosine(0.9999)])
    result = semantic_dedup(rows, config=DedupConfig(eps=0.0))
    np.testing.assert_array_equal(result.kept, [True, True, True, False, True, True])
    assert result.duplicate_of[3] == 0


def test_all_identical_rows_keep_the_first():
    row = random_unit(np.random.default_rng(10), 1, 24)
    rows = np.repeat(row, 6000, axis=0) * np.linspace(0.5, 2.0, 6000, dtype=np.float32)[:, None]
    result = semantic_dedup(rows)
    assert result.kept[0] and result.n_dropped == 5999
    assert (result.duplicate_of[1:] == 0).all()


@pytest.mark.parametrize("search_dim", [None, 32], ids=["full", "projected"])
def test_a_clip_whose_earliest_candidates_were_all_dropped_is_still_checked_against_later_kept_ones(search_dim):
    dim = 64
    e1, e2, e3 = np.eye(dim, dtype=np.float32)[:3]
    angle = np.arccos(0.9935)
    anchor = e1
    # More near-copies of the anchor than a clip records as candidates; all are dropped (dups of anchor).
    rng = np.random.default_rng(11)
    drifted = np.cos(angle) * e1 + np.sin(angle) * e2
    crowd = noisy_copy(rng, np.tile(drifted, (CANDIDATES_PER_CLIP + 4, 1)), 0.99999)
    further = np.cos(2 * angle) * e1 + np.sin(2 * angle) * e2  # close to the crowd, not to the anchor
    kept_neighbour = unit(further + 0.1 * e3)  # close to `further` only; kept
    rows = np.concatenate([anchor[None], crowd, kept_neighbour[None], further[None]])
    # One cluster, so that the whole crowd is in one block and the candidate cap applies.
    result = semantic_dedup(rows, config=DedupConfig(n_clusters=1, search_dim=search_dim))
    assert result.kept[0] and not result.kept[1 : 1 + len(crowd)].any()
    assert result.kept[-2]
    assert not result.kept[-1] and result.duplicate_of[-1] == len(rows) - 2
    np.testing.assert_array_equal(result.kept, greedy_reference(rows, np.arange(len(rows)), eps=0.01))


@BOTH_SPACES
def test_the_same_input_gives_the_same_result(config):
    rng = np.random.default_rng(12)
    rows, _ = with_planted_copies(rng, n_distinct=3000, n_copies=300, dim=32, cosine=0.99)
    first, second = semantic_dedup(rows, config=config), semantic_dedup(rows.copy(), config=config)
    for field in ("kept", "duplicate_of", "similarity", "cluster", "centroids"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def test_empty_and_single_inputs():
    empty = semantic_dedup(np.zeros((0, 8), dtype=np.float32))
    assert empty.kept.shape == (0,) and empty.duplicate_of.shape == (0,)
    single = semantic_dedup(np.ones((1, 8), dtype=np.float32))
    assert single.kept.tolist() == [True] and single.duplicate_of.tolist() == [-1]


@BOTH_SPACES
def test_float64_and_unnormalised_input_gives_the_float32_unit_result(config):
    rng = np.random.default_rng(13)
    rows, _ = with_planted_copies(rng, n_distinct=800, n_copies=80, dim=24)
    scales = rng.uniform(0.1, 10.0, (len(rows), 1))
    np.testing.assert_array_equal(
        semantic_dedup(rows, config=config).kept, semantic_dedup(rows * scales, config=config).kept
    )


def test_the_projection_loosens_the_search_threshold_and_gives_way_to_the_full_space_for_large_eps():
    projected = SearchSpace.for_config(DedupConfig(eps=0.01), 768)
    assert projected.projected and projected.dim == 128
    # Loose enough that a pair at 0.99 is a candidate even when the projection shrinks its cosine.
    assert 0.96 < projected.candidate_threshold < 0.98
    assert not SearchSpace.for_config(DedupConfig(eps=0.2), 768).projected
    assert not SearchSpace.for_config(DedupConfig(eps=0.01), 64).projected


@pytest.mark.parametrize(
    "bad_row, message",
    [(np.zeros(8), "row 2 has norm 0"), (np.full(8, np.nan), "row 2 has norm nan"), (np.full(8, np.inf), "row 2")],
)
def test_rows_without_a_direction_are_rejected(bad_row, message):
    rows = np.ones((4, 8), dtype=np.float32)
    rows[2] = bad_row
    with pytest.raises(ValueError, match=message):
        semantic_dedup(rows)


def test_malformed_input_is_rejected():
    rows = np.ones((4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="2-D"):
        semantic_dedup(np.ones(8, dtype=np.float32))
    with pytest.raises(ValueError, match="floating point"):
        semantic_dedup(np.ones((4, 8), dtype=np.int64))
    with pytest.raises(ValueError, match=r"priority must have shape \(4,\)"):
        semantic_dedup(rows, np.arange(3))
    with pytest.raises(ValueError, match="priority has NaN at index 1"):
        semantic_dedup(rows, np.array([0.0, np.nan, 1.0, 2.0]))
    with pytest.raises(ValueError, match="eps"):
        DedupConfig(eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        DedupConfig(eps=1.0)
    with pytest.raises(ValueError, match="centroids must have shape"):
        semantic_dedup(rows, centroids=np.ones((2, 5), dtype=np.float32))


def test_exact_duplicates_keep_the_first_clip_of_each_hash():
    hashes = ["a", "b", "a", "c", "b", "a"]
    np.testing.assert_array_equal(exact_duplicates(hashes), [-1, -1, 0, -1, 1, 0])
    # By priority, clip 5 is the oldest "a" and clip 4 the oldest "b".
    priority = np.array([3, 9, 4, 0, 1, 2])
    np.testing.assert_array_equal(exact_duplicates(hashes, priority), [5, 4, 5, -1, -1, -1])
    assert exact_duplicates([]).shape == (0,)
    np.testing.assert_array_equal(exact_duplicates(np.array([7, 7, 7], dtype=np.uint64)), [-1, 0, 0])
