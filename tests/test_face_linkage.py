"""Graph average linkage and the neighbour graph against the dense reference they replace at scale."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering

from benchmarks.synthetic_faces import labels_of, pairwise_scores, synthetic_library
from shared import face_neighbours
from shared.face_clustering import cosine_distances, embedding_matrix, partition
from shared.face_linkage import graph_average_linkage
from shared.face_neighbours import components, neighbour_edges, unit_rows


def _canon(groups: list[list[int]]) -> list[list[int]]:
    return sorted(sorted(int(m) for m in g) for g in groups)


def _dense(emb: np.ndarray, threshold: float) -> list[list[int]]:
    model = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=threshold
    )
    labels = model.fit_predict(cosine_distances(emb.astype(np.float64)))
    return [np.flatnonzero(labels == lab).tolist() for lab in np.unique(labels)]


def _blobs(seed: int, people: int = 12, per: int = 15, dim: int = 32, noise: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, dim))
    return unit_rows(np.repeat(centres, per, axis=0) + noise * rng.standard_normal((people * per, dim)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_the_complete_graph_it_is_average_linkage(seed: int) -> None:
    """With every pair an edge, the merge order and cut are the dense algorithm's exactly."""
    emb = _blobs(seed)
    a, b = np.triu_indices(len(emb), k=1)
    for threshold in (0.3, 0.6, 0.9):
        assert _canon(graph_average_linkage(emb, a, b, threshold)) == _canon(_dense(emb, threshold))


def test_merges_follow_the_average_not_the_closest_pair() -> None:
    """Two tight pairs with one close cross pair: single linkage would join them, average linkage not."""
    angles = np.array([0.0, 0.2, 0.45, 0.65])  # on a circle: pairs 0.02 apart, 1-2 only 0.03 apart
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    a, b = np.triu_indices(4, k=1)
    # {0,1} and {2,3} are 0.11 apart on average although 1 and 2 are 0.03 apart
    assert _canon(graph_average_linkage(emb, a, b, threshold=0.05)) == [[0, 1], [2, 3]]
    assert _canon(graph_average_linkage(emb, a, b, threshold=0.15)) == [[0, 1, 2, 3]]
    # no edge, no merge: the graph decides which groups may meet
    assert _canon(graph_average_linkage(emb, np.array([0]), np.array([1]), 0.15)) == [[0, 1], [2], [3]]


def test_neighbour_edges_are_the_exact_nearest() -> None:
    emb = _blobs(3, people=6, per=20)
    edges = neighbour_edges(emb, k=5)
    dist = cosine_distances(emb.astype(np.float64))
    np.fill_diagonal(dist, np.inf)
    truth = {(min(i, j), max(i, j)) for i in range(len(emb)) for j in np.argsort(dist[i])[:5]}
    found = set(zip(edges.a.tolist(), edges.b.tolist(), strict=True))
    assert found == truth
    assert np.allclose(edges.dist, dist[edges.a, edges.b], atol=1e-5)
    labels = components(len(emb), edges, threshold=0.5)
    # faces of one blob share a component; blobs (near-orthogonal centres) stay apart
    assert len(np.unique(labels)) == 6
    assert all(len(np.unique(labels[i * 20 : (i + 1) * 20])) == 1 for i in range(6))


def test_inverted_file_search_finds_most_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_SEARCH_MAX the approximate index keeps nearly every exact edge closer than 0.5."""
    emb = embedding_matrix(synthetic_library(4000, seed=5).faces)
    exact = neighbour_edges(emb)
    monkeypatch.setattr(face_neighbours, "EXACT_SEARCH_MAX", 1000)
    approx = neighbour_edges(emb)

    def close(e: face_neighbours.NeighbourEdges) -> set[tuple[int, int]]:
        keep = e.dist < 0.5
        return set(zip(e.a[keep].tolist(), e.b[keep].tolist(), strict=True))

    assert len(close(approx) & close(exact)) >= 0.97 * len(close(exact))


@pytest.mark.parametrize("seed", [0, 1])
def test_graph_path_matches_the_reference_on_synthetic_identities(seed: int) -> None:
    """Power-law people, look-alike relatives, duplicates, outliers and group photos: same people."""
    lib = synthetic_library(2500, seed=seed)
    emb = embedding_matrix(lib.faces)
    photos = np.array([f.photo_id for f in lib.faces])
    reference = partition(emb, photos, 0.42, exact_max=10**9)
    graph = partition(emb, photos, 0.42, exact_max=8)
    assert max(len(g) for g in graph) > 8  # the graph linkage really ran
    assert _canon(graph) == _canon(reference)
    _, _, f1 = pairwise_scores(labels_of(graph, len(emb)), lib.identities)
    assert f1 > 0.9
