"""Compiled kernel for the grid KS metric: sums of per-cell KS D between frame sketches.

numpy needs four passes over temporaries per frame pair (max, min, subtract, reduce); this loop
does one, in the sketch's own integer width, so the compiler vectorises it over 32-64 cells per
instruction (measured 0.74 us per 576-cell x 20-bin uint8 frame pair vs 2.1 us for numpy).
Compiled on first use and cached on disk next to this file (numba ``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import overload


def _as_type_of(value, like):
    """Only callable from compiled code (see the overload below)."""
    raise NotImplementedError


@overload(_as_type_of)
def _as_type_of_impl(value, like):
    """Cast ``value`` to the scalar type of ``like``: numba widens small-int arithmetic to int64,
    and the narrow cast lets LLVM vectorise in uint8/uint16 lanes."""
    target = like

    def impl(value, like):
        return target(value)

    return impl


@njit(nogil=True, cache=True, boundscheck=False)
def ks_distance_sums(queries, block, weights, out):
    """``out[m, j] = sum_c weights[c] * max_b |queries[m, b, c] - block[j, b, c]|``.

    ``queries`` (m, B, cells) and ``block`` (k, B, cells): same unsigned dtype, C-contiguous
    cumulative counts; ``weights``: 1 / cell size (float64); ``out``: (m, k) float64.
    Releases the GIL, so several threads can share one pool.
    """
    m_count, bins, cells = queries.shape
    worst = np.empty(cells, dtype=queries.dtype)
    for j in range(block.shape[0]):
        pool_frame = block[j]
        for m in range(m_count):
            query = queries[m]
            worst[:] = 0
            for b in range(bins):
                q_row = query[b]
                p_row = pool_frame[b]
                for c in range(cells):
                    x = q_row[c]
                    y = p_row[c]
                    d = _as_type_of(max(x, y) - min(x, y), x)
                    worst[c] = max(worst[c], d)
            total = 0.0
            for c in range(cells):
                total += np.float64(worst[c]) * weights[c]
            out[m, j] = total
