"""How many CPUs this process may use, and thread settings that hold up on a shared machine.

Numerical libraries size their thread pools from the host's core count, and idle OpenMP
threads spin while they wait. On a shared machine (other jobs, a container's CPU quota) that
oversubscribes the cores, and a spinning thread burns the time slice that the thread it waits
for needs: the demo's frame-encoder step took 16x its idle time at load 5-7 on 2 cores.
:func:`configure_threads` (the CLI calls it before torch or numpy start their pools) makes
waiting OpenMP threads sleep and sizes every pool to the CPUs this process may use (its
affinity mask and cgroup quota, not the host's core count). Values set in the environment win.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

#: Pool sizes read by torch (intra-op), MKL, OpenBLAS and numba when they start.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _cgroup_quota(path: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max``: ``QUOTA PERIOD`` or ``max PERIOD``)."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def usable_cpus(cgroup: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota; >= 1."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS / Windows
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def configure_threads(environ: MutableMapping[str, str] = os.environ) -> int:
    """Passive OpenMP waiting and pools of :func:`usable_cpus` threads, unless the environment
    says otherwise; returns the pool size. Must run before torch/numpy create their pools."""
    count = usable_cpus()
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(count))
    return count
