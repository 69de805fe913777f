"""Agglomerative clustering (facedemo.clustering) on synthetic vectors and distance matrices; real faces are
in test_album.py. scipy's hierarchical clustering is the reference implementation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from facedemo.clustering import LINKAGES, MAX_ITEMS, ClusteringError, cluster, groups


def scipy_groups(matrix: np.ndarray, cut: float, method: str) -> list[list[int]]:
    if len(matrix) == 1:
        return [[0]]
    labels = fcluster(linkage(squareform(matrix.astype(np.float64), checks=False), method), cut, criterion="distance")
    return sorted(np.flatnonzero(labels == label).tolist() for label in set(labels))


@pytest.mark.parametrize("method", LINKAGES)
def test_groups_are_scipys_closest_pair_first_merging_cut_at_the_same_distance(method):
    rng = np.random.default_rng(7)
    for _ in range(40):
        points = rng.normal(size=(int(rng.integers(1, 50)), 4))
        matrix = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)).astype(np.float32)
        cut = float(rng.uniform(0.5, 3.0))
        assert sorted(groups(matrix, cut, method)) == scipy_groups(matrix, cut, method)


def test_well_separated_people_are_recovered_from_unit_vectors():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(5), [6, 5, 4, 3, 1])
    faces = centres[truth] + rng.normal(scale=0.03, size=(len(truth), 128))
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    found = cluster(faces, "cosine", 0.5)
    assert [truth[g].tolist() for g in found] == [[0] * 6, [1] * 5, [2] * 4, [3] * 3, [4]]


def test_two_items_join_only_below_the_cut():
    matrix = np.array([[0.0, 0.5], [0.5, 0.0]], np.float32)
    assert groups(matrix, 0.51) == [[0, 1]]
    assert groups(matrix, 0.5) == [[0], [1]]


def test_larger_groups_come_first_then_groups_in_the_order_of_their_first_item():
    matrix = np.full((5, 5), 9.0, np.float32)
    for a, b in ((1, 3), (2, 4), (2, 0)):
        matrix[a, b] = matrix[b, a] = 0.1
    np.fill_diagonal(matrix, 0)
    assert groups(matrix, 1.0, "single") == [[0, 2, 4], [1, 3]]


def test_average_linkage_keeps_apart_a_chain_that_single_linkage_joins():
    matrix = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], np.float32)  # a - b - c, each step 1
    assert groups(matrix, 1.2, "single") == [[0, 1, 2]]
    assert groups(matrix, 1.2, "average") == [[0, 1], [2]]


def test_the_matrix_given_is_not_changed():
    matrix = np.array([[0, 0.2], [0.2, 0]], np.float32)
    groups(matrix, 1.0)
    assert matrix.tolist() == [[0, np.float32(0.2)], [np.float32(0.2), 0]]


def test_nothing_to_cluster_gives_no_groups():
    assert cluster(np.zeros((0, 128), np.float32), "cosine", 0.5) == []


def test_an_unknown_linkage_is_refused():
    with pytest.raises(ClusteringError, match="unknown linkage 'ward'"):
        groups(np.zeros((2, 2), np.float32), 1.0, "ward")


def test_more_items_than_the_limit_are_refused_before_any_memory_is_taken():
    too_many = np.broadcast_to(np.float32(0), (MAX_ITEMS + 1, MAX_ITEMS + 1))  # a view: no memory
    with pytest.raises(ClusteringError, match=f"at most {MAX_ITEMS}"):
        groups(too_many, 1.0)
