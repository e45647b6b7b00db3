"""Cold-start seeding: k-means coverage, proportional allocation by hand, distinct and typical picks."""

import numpy as np
import pytest

from al_backend.errors import InputError
from al_backend.seeding import allocate, assign_clusters, default_n_clusters, fit_clusters, seed_batch


def three_blobs(sizes=(60, 30, 10), d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[: len(sizes)] * 10
    X = np.concatenate([c + rng.normal(size=(n, d)).astype(np.float32) * 0.3 for c, n in zip(centres, sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return X.astype(np.float32), truth


def test_allocation_is_proportional_with_largest_remainders():
    # 5 x (0.6, 0.3, 0.1) = (3, 1.5, 0.5): floors (3, 1, 0); the tie on 0.5 goes to the larger cluster
    assert allocate([6, 3, 1], 5).tolist() == [3, 2, 0]
    # 10 x (0.5, 0.3, 0.2) is exact
    assert allocate([50, 30, 20], 10).tolist() == [5, 3, 2]
    # capped by what a cluster has; the total is min(k, pool)
    assert allocate([1, 1, 10], 12).tolist() == [1, 1, 10]
    assert allocate([2, 3], 50).tolist() == [2, 3]
    assert allocate([4, 4], 0).tolist() == [0, 0]


def test_allocation_fills_the_gaps_left_by_earlier_labels():
    # sizes (5, 5) with 4 labeled in cluster 0: total (9, 5), target for 2 more = 6 x (9/14, 5/14) = (3.86, 2.14);
    # cluster 0 is already above its target, so both picks go to cluster 1
    assert allocate([5, 5], 2, already=[4, 0]).tolist() == [0, 2]
    with pytest.raises(InputError):
        allocate([5, 5], 2, already=[1])


def test_clusters_cover_the_blobs_and_new_points_join_them():
    X, truth = three_blobs()
    centroids = fit_clusters(X, 3, seed=0)
    assert centroids.shape == (3, 16) and centroids.dtype == np.float32
    assign = assign_clusters(X, centroids)
    assert assign.dtype == np.int64 and sorted(np.unique(assign)) == [0, 1, 2]
    for blob in range(3):  # each blob is one cluster, each cluster one blob
        assert len(np.unique(assign[truth == blob])) == 1
    new_point = X[truth == 2][:1] + 0.01
    assert assign_clusters(new_point, centroids)[0] == assign[truth == 2][0]
    np.testing.assert_array_equal(fit_clusters(X, 3, seed=0), centroids)  # deterministic for a seed
    assert fit_clusters(X[:2], 5).shape[0] == 2  # never more clusters than rows


def test_seed_batch_is_distinct_proportional_and_deterministic():
    X, truth = three_blobs()
    picks = seed_batch(X, truth, 10, np.random.default_rng(0))
    assert picks.dtype == np.int64 and len(picks) == 10 and len(set(picks.tolist())) == 10
    assert np.bincount(truth[picks], minlength=3).tolist() == [6, 3, 1]
    np.testing.assert_array_equal(picks, seed_batch(X, truth, 10, np.random.default_rng(0)))
    # interleaved: the first three picks visit every cluster
    assert sorted(truth[picks[:3]].tolist()) == [0, 1, 2]
    everything = seed_batch(X, truth, 500, 1)
    assert sorted(everything.tolist()) == list(range(100))


def test_typical_picks_are_nearest_the_cluster_mean():
    X, truth = three_blobs()
    X[5] = X[truth == 0].mean(axis=0)  # plant the exact centre of blob 0... the mean moves a little
    centre0 = X[truth == 0].mean(axis=0)
    nearest0 = int(np.argmin(((X[truth == 0] - centre0) ** 2).sum(axis=1)))
    picks = seed_batch(X, truth, 3, 0, typical_fraction=1.0)
    assert nearest0 in picks.tolist()
    random_picks = [seed_batch(X, truth, 3, s, typical_fraction=0.0) for s in range(5)]
    assert len({tuple(sorted(p.tolist())) for p in random_picks}) > 1


def test_already_labeled_counts_shift_the_batch_and_accept_arrays_or_dicts():
    X, truth = three_blobs()
    # blob 0 (60 rows) already has 8 labels: 10 more should go where the share is missing
    as_dict = seed_batch(X, truth, 10, 0, already_labeled_per_cluster={0: 8})
    as_array = seed_batch(X, truth, 10, 0, already_labeled_per_cluster=np.array([8, 0, 0]))
    np.testing.assert_array_equal(as_dict, as_array)
    # 18 x (60, 30, 10) / 100 = (10.8, 5.4, 1.8): need (2.8, 5.4, 1.8) -> 10 picks = (3, 5, 2) by largest remainder
    assert np.bincount(truth[as_dict], minlength=3).tolist() == [3, 5, 2]


def test_default_cluster_count():
    assert default_n_clusters(1000, 5) == 10
    assert default_n_clusters(5, 5) == 5
    assert default_n_clusters(20_000) == 100
    assert default_n_clusters(10_000_000) == 256
    assert default_n_clusters(1) == 1


def test_bad_inputs():
    X, truth = three_blobs()
    with pytest.raises(InputError):
        seed_batch(X, truth[:5], 3, 0)
    with pytest.raises(InputError):
        seed_batch(X, truth, 3, 0, typical_fraction=2.0)
    with pytest.raises(InputError):
        assign_clusters(X[:, :4], fit_clusters(X, 3))
    assert seed_batch(X, truth, 0, 0).shape == (0,)
