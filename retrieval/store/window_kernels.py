"""The window scan's compiled loops (retrieval/store/window_scan.py): int8 dot products of a
run of rows, and the best masked rows by a one-pass heap. Apart so numba is imported only when
a window is scanned."""

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def dots(x, q, lo, hi, out):  # pragma: no cover - compiled
    d = x.shape[1]
    for i in range(lo, hi):
        acc = np.int32(0)
        for j in range(d):
            acc += np.int32(x[i, j]) * np.int32(q[j])
        out[i - lo] = acc


@njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def best(dots, scale, mask, want):  # pragma: no cover - compiled
    """Positions of the ``want`` largest ``dots * scale`` where ``mask`` (any order): a min-heap,
    one pass, no window-sized temporaries (at 1M rows, 9 ms less than scale + argpartition)."""
    top = np.empty(want, dtype=np.float32)
    pos = np.empty(want, dtype=np.int64)
    size = 0
    for i in range(dots.shape[0]):
        if not mask[i]:
            continue
        s = np.float32(dots[i]) * scale[i]
        if size < want:  # sift up
            c = size
            size += 1
            while c > 0 and top[(c - 1) // 2] > s:
                top[c], pos[c] = top[(c - 1) // 2], pos[(c - 1) // 2]
                c = (c - 1) // 2
        elif s > top[0]:  # replace the smallest, sift down
            c = 0
            while True:
                child = 2 * c + 1
                if child >= want:
                    break
                if child + 1 < want and top[child + 1] < top[child]:
                    child += 1
                if top[child] >= s:
                    break
                top[c], pos[c] = top[child], pos[child]
                c = child
        else:
            continue
        top[c], pos[c] = s, i
    return pos[:size]
