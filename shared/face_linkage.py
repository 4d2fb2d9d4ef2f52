"""Average linkage along a sparse neighbour graph: today's clustering where an n x n matrix does not fit.

With unit embeddings, the average cosine distance between two groups is exact from their embedding sums:
mean(1 - a . b) over all pairs = 1 - (sum A . sum B) / (|A| |B|). So the merge criterion is the dense
algorithm's, pair for pair; only the *candidates* are restricted to groups linked by at least one
nearest-neighbour edge. Two groups closer than the threshold on average almost always hold a face among
the other's nearest neighbours, so the partition matches the dense one on all but rare borderline groups
(measured in docs/performance.md). Memory: the groups' sums (n x dim float32) plus the edges.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

import numpy as np


def graph_average_linkage(emb: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float) -> list[list[int]]:
    """Groups of the rows of `emb` (unit rows), merged along edges (a[i], b[i]) while closer than
    `threshold` on average, closest pair first."""
    n = emb.shape[0]
    sums = emb.astype(np.float32, copy=True)
    sizes = np.ones(n, dtype=np.float64)
    # A merged group lives on in the slot of one of its parts; `version` tells stale heap entries apart.
    version = [0] * n
    alive = [True] * n
    owner = list(range(n))
    adjacent: list[set[int]] = [set() for _ in range(n)]
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        adjacent[x].add(y)
        adjacent[y].add(x)
    close = 1.0 - np.einsum("ij,ij->i", emb[a], emb[b]) if len(a) else np.empty(0)
    heap = [
        (d, x, 0, y, 0)
        for d, x, y in zip(close.tolist(), a.tolist(), b.tolist(), strict=True)
        if d < threshold
    ]
    heapify(heap)
    while heap:
        _, x, vx, y, vy = heappop(heap)
        if not (alive[x] and alive[y] and version[x] == vx and version[y] == vy):
            continue
        if len(adjacent[x]) < len(adjacent[y]):
            x, y = y, x
        sums[x] += sums[y]
        sizes[x] += sizes[y]
        alive[y] = False
        owner[y] = x
        version[x] += 1
        merged = adjacent[x]
        merged |= adjacent[y]
        merged.discard(x)
        merged.discard(y)
        adjacent[y] = set()
        for other in merged:
            adjacent[other].discard(y)
            adjacent[other].add(x)
        if not merged:
            continue
        others = np.fromiter(merged, dtype=np.int64, count=len(merged))
        dist = 1.0 - (sums[others] @ sums[x]) / (sizes[others] * sizes[x])
        for other, d in zip(others.tolist(), dist.tolist(), strict=True):
            if d < threshold:
                heappush(heap, (d, x, version[x], other, version[other]))
    return _groups(owner)


def _groups(owner: list[int]) -> list[list[int]]:
    """Rows grouped by the slot their group ended in."""
    groups: dict[int, list[int]] = {}
    for row in range(len(owner)):
        slot = row
        while owner[slot] != slot:
            slot = owner[slot]
        owner[row] = slot
        groups.setdefault(slot, []).append(row)
    return list(groups.values())
