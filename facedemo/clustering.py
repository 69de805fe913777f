"""Grouping faces that look like one person: agglomerative clustering of embeddings, cut at a distance.

Used for the unknown faces of an album: faces nobody enrolled, grouped so that "the same unknown
person" can be counted and chosen (e.g. as the uploader themself), without naming anyone. Distances
are the embedding model's own (`facedemo.matching.distances`: 1 - cosine for SFace, L2 for dlib),
and the cut is in that unit, usually the model's decision threshold: two faces end up in one group
only when their groups are, by the linkage's measure, closer than the threshold.
"""
from __future__ import annotations

import numpy as np

from facedemo.matching import distances

# How the distance between two groups follows from the distances between their faces:
# "average" (UPGMA: the mean over all pairs), "complete" (the farthest pair), "single" (the nearest pair).
LINKAGES = ("average", "complete", "single")
DEFAULT_LINKAGE = "average"
# The clustering holds an N x N float32 matrix: 4000 faces take 64 MB. An album at its default limits
# (200 photos) rarely has a tenth of that; faces beyond it are left ungrouped by the caller.
MAX_ITEMS = 4000


class ClusteringError(ValueError):
    """An unknown linkage, or more items than MAX_ITEMS."""


def cluster(vectors: np.ndarray, metric: str, cut: float, linkage: str = DEFAULT_LINKAGE) -> list[list[int]]:
    """Groups of the rows of `vectors` (N x D embeddings of one model) that are one person by `linkage`,
    each group joined only while the linkage distance stays below `cut` (the metric's unit).

    Returns lists of row indices, each ascending; the largest group first, groups of one size in the
    order of their first row. Every row is in exactly one group (a lone face is a group of one).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return []
    return groups(distances(vectors, vectors, metric), cut, linkage)


def groups(matrix: np.ndarray, cut: float, linkage: str = DEFAULT_LINKAGE) -> list[list[int]]:
    """`cluster` on a symmetric N x N distance matrix instead of vectors (the matrix is not changed).

    The nearest-neighbour-chain algorithm: O(N^2) time and one N x N matrix. It gives the same
    groups as merging the closest pair first (scipy's `linkage` cut with `fcluster`), because
    average, complete and single linkage never bring a merged group closer to a third group
    than the nearer of its two parts was.
    """
    if linkage not in LINKAGES:
        raise ClusteringError(f"unknown linkage {linkage!r}; use one of {', '.join(LINKAGES)}")
    n = len(matrix)
    if n > MAX_ITEMS:
        raise ClusteringError(f"{n} items to cluster; at most {MAX_ITEMS} at once")
    d = np.array(matrix, dtype=np.float32, copy=True)
    if d.shape != (n, n):
        raise ClusteringError(f"expected a square distance matrix, got shape {d.shape}")
    np.fill_diagonal(d, np.inf)  # a group is never its own neighbour; removed groups become inf too
    size = np.ones(n, dtype=np.float32)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    active = np.ones(n, dtype=bool)
    done: list[list[int]] = []
    chain: list[int] = []
    while members:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        a = chain[-1]
        b = int(np.argmin(d[a]))
        previous = chain[-2] if len(chain) > 1 else -1
        # On a tie the chain's previous group wins, or the chain could cycle between equals.
        if previous >= 0 and d[a, previous] <= d[a, b]:
            b = previous
        if not d[a, b] < cut:
            # Nothing is closer than the cut now, and merges elsewhere cannot bring anything closer.
            done.append(members.pop(a))
            _remove(d, active, a)
            chain.pop()
            continue
        if b != previous:
            chain.append(b)
            continue
        chain.pop()
        chain.pop()
        if linkage == "average":
            merged = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
        elif linkage == "complete":
            merged = np.maximum(d[a], d[b])
        else:
            merged = np.minimum(d[a], d[b])
        d[a] = merged
        d[:, a] = merged
        d[a, a] = np.inf
        size[a] += size[b]
        members[a] += members.pop(b)
        _remove(d, active, b)
    for group in done:
        group.sort()
    return sorted(done, key=lambda g: (-len(g), g[0]))


def _remove(d: np.ndarray, active: np.ndarray, i: int) -> None:
    d[i] = np.inf
    d[:, i] = np.inf
    active[i] = False
