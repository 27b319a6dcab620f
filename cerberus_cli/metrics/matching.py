"""One-to-one matching of true and predicted instances.

Two matchings are used by the metrics:

* :func:`match_iou` pairs instances for PQ. Pairs must have IoU strictly above the
  threshold. At 0.5 or more, non-overlapping instances can have at most one partner
  above the threshold, so the pairs are unique without any search; below 0.5 (or
  when a polygon set holds overlapping objects) the unique pairs maximising the
  total IoU are found with the Hungarian algorithm.
* :func:`max_weight_matching` solves the assignment on a sparse candidate graph,
  one connected component at a time, so its cost follows the size of the largest
  cluster of touching instances, not the number of instances.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cerberus_cli.metrics.overlap import Overlap


def max_weight_matching(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                        n_rows: int, n_cols: int, minimize: bool = False,
                        ) -> np.ndarray:
    """Unique pairs among candidate edges with the best total weight.

    ``rows[i]``-``cols[i]`` is a candidate edge with ``weights[i] > 0``. With
    ``minimize=False`` the total weight is maximised. With ``minimize=True`` the
    number of pairs is maximised first and the total weight minimised among those
    (used for centroid distances). Returns the indices of the chosen edges.
    """
    k = rows.size
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(k), (rows, n_rows + cols)), shape=(n_rows + n_cols,) * 2)
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[rows]
    sizes = np.bincount(edge_comp)
    chosen = [np.flatnonzero(sizes[edge_comp] == 1)]  # isolated edges match themselves
    multi = np.flatnonzero(sizes[edge_comp] > 1)
    if multi.size:
        multi = multi[np.argsort(edge_comp[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(edge_comp[multi])) + 1
        for edges in np.split(multi, bounds):
            chosen.append(_solve_dense(edges, rows[edges], cols[edges], weights[edges], minimize))
    return np.sort(np.concatenate(chosen))


def _solve_dense(edges: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 weights: np.ndarray, minimize: bool) -> np.ndarray:
    """Hungarian assignment on one connected component; returns chosen edge ids."""
    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    edge_at = np.full((r_ids.size, c_ids.size), -1, dtype=np.int64)
    edge_at[r, c] = np.arange(edges.size)
    if minimize:
        # A non-edge costs more than all edges together: fewest non-edges first.
        cost = np.full(edge_at.shape, weights.sum() + 1.0)
        cost[r, c] = weights
        rr, cc = linear_sum_assignment(cost)
    else:
        gain = np.zeros(edge_at.shape)
        gain[r, c] = weights
        rr, cc = linear_sum_assignment(gain, maximize=True)
    picked = edge_at[rr, cc]
    return edges[picked[picked >= 0]]


def match_iou(overlap: Overlap, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique true/pred pairs with IoU > ``threshold``.

    Returns ``(true_index, pred_index, iou)`` of the matched pairs. The threshold
    must lie in [0, 1).
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"IoU threshold must be in [0, 1), got {threshold}")
    iou = overlap.iou()
    cand = np.flatnonzero(iou > threshold)
    pt, pp, w = overlap.pair_true[cand], overlap.pair_pred[cand], iou[cand]
    if threshold >= 0.5 and _unique(pt) and _unique(pp):
        return pt, pp, w
    sel = max_weight_matching(pt, pp, w, overlap.n_true, overlap.n_pred)
    return pt[sel], pp[sel], w[sel]


def _unique(a: np.ndarray) -> bool:
    return a.size < 2 or bool(np.all(np.diff(np.sort(a)) != 0))
