"""Nearest neighbours of face embeddings without an n x n matrix: the sparse graph people clustering uses.

faiss searches in blocks with a bounded top-k heap, so memory is O(n * k), not O(n^2). Up to
EXACT_SEARCH_MAX faces the search is exact (a flat inner-product index); above it an inverted-file index
(k-means cells, a few probed per query) trades a little recall for time that grows ~n^1.5 instead of n^2.
Its vectors are stored as 8-bit codes (a quarter of float32: 100 MB instead of 400 MB at 200k faces of
512-d), so it only proposes the neighbours: every edge's distance is computed from the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

NEIGHBOURS = 32
"""Neighbours kept per face. Enough to see past a person's near-duplicates and link every face of a
person into one component; more only slows the linkage (each edge is a heap entry)."""

EXACT_SEARCH_MAX = 20_000
"""Largest library searched exactly. At 50k synthetic faces exact search took 70 s and the inverted file
16 s for the same F1 (0.9949), so moderate libraries already use the inverted file."""

IVF_PROBES = 12
"""Cells probed per query above EXACT_SEARCH_MAX: measured pairwise F1 within 0.01 of exact search at
50k synthetic faces (docs/performance.md)."""

SEARCH_BLOCK = 8192
"""Queries per faiss call: bounds the k-nearest result arrays held at once."""

EDGE_BLOCK = 4096
"""Edges whose exact distance is computed at once (two 4096 x dim float32 gathers: 16 MB at 512-d)."""


@dataclass(frozen=True)
class NeighbourEdges:
    """Undirected edges a < b (int32 face indices) with their cosine distance, each pair once."""

    a: np.ndarray
    b: np.ndarray
    dist: np.ndarray

    def __len__(self) -> int:
        return int(self.a.size)

    def within(self, mask: np.ndarray) -> NeighbourEdges:
        """The edges whose both ends are in `mask` (a boolean array over faces)."""
        keep = mask[self.a] & mask[self.b]
        return NeighbourEdges(self.a[keep], self.b[keep], self.dist[keep])


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (faiss' type, half float64's memory)."""
    emb = np.ascontiguousarray(vectors, dtype=np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb


def _index(emb: np.ndarray) -> faiss.Index:
    n, dim = emb.shape
    if n <= EXACT_SEARCH_MAX:
        flat = faiss.IndexFlatIP(dim)
        flat.add(emb)
        return flat
    cells = int(np.sqrt(n))
    ivf = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    rng = np.random.default_rng(0)
    ivf.train(emb[np.sort(rng.choice(n, size=min(n, 40 * cells), replace=False))])
    ivf.nprobe = IVF_PROBES
    ivf.add(emb)
    return ivf


def neighbour_edges(emb: np.ndarray, k: int = NEIGHBOURS) -> NeighbourEdges:
    """The k nearest neighbours of every row of `emb` (unit rows), as undirected distance edges."""
    n = emb.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        empty = np.empty(0, dtype=np.int32)
        return NeighbourEdges(empty, empty, np.empty(0, dtype=np.float32))
    index = _index(emb)
    # Pairs as one int64 key (lo * n + hi), deduplicated per block and overall: each pair may come
    # from both ends. Keys and int32 ends hold a third of what separate int64 arrays would.
    keys = []
    for start in range(0, n, SEARCH_BLOCK):
        _, ids = index.search(emb[start : start + SEARCH_BLOCK], k + 1)
        rows = np.repeat(np.arange(start, start + ids.shape[0], dtype=np.int64), k + 1)
        ids = ids.ravel()
        keep = (ids >= 0) & (ids != rows)
        rows, ids = rows[keep], ids[keep]
        keys.append(np.unique(np.minimum(rows, ids) * n + np.maximum(rows, ids)))
    del index
    key = np.unique(np.concatenate(keys))
    del keys
    a, b = (key // n).astype(np.int32), (key % n).astype(np.int32)
    del key
    # Distances from the embeddings themselves: exact even where the index stores 8-bit codes.
    d = np.empty(a.size, dtype=np.float32)
    for lo in range(0, a.size, EDGE_BLOCK):
        hi = lo + EDGE_BLOCK
        d[lo:hi] = np.clip(1.0 - np.einsum("ij,ij->i", emb[a[lo:hi]], emb[b[lo:hi]]), 0.0, 2.0)
    return NeighbourEdges(a, b, d)


def components(n: int, edges: NeighbourEdges, threshold: float) -> np.ndarray:
    """Component label per face of the graph of edges closer than `threshold`.

    Average linkage cut at `threshold` never joins two faces with no chain of pairs closer than it, so
    each component can be clustered on its own.
    """
    close = edges.dist < threshold
    graph = coo_matrix((np.ones(int(close.sum()), dtype=np.int8), (edges.a[close], edges.b[close])), (n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels)
