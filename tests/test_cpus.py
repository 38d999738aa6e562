"""Thread pools sized to the CPUs this process may use; OpenMP threads wait passively."""

from __future__ import annotations

import os
import subprocess
import sys

from skysearch.cpus import THREAD_VARIABLES, configure_threads, usable_cpus


def test_usable_cpus_follows_affinity_and_cgroup_quota(tmp_path):
    quota = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == affinity
    quota.write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(quota) == 1
    quota.write_text(f"{affinity * 300000} 100000\n")  # quota above the mask: the mask wins
    assert usable_cpus(quota) == affinity
    quota.write_text("garbage")
    assert usable_cpus(quota) == affinity
    assert usable_cpus(tmp_path / "absent") == affinity


def test_configure_threads_keeps_what_the_user_set():
    env = {"OMP_NUM_THREADS": "7"}
    count = configure_threads(env)
    assert count == usable_cpus() and env["OMP_NUM_THREADS"] == "7"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert all(env[name] == str(count) for name in THREAD_VARIABLES if name != "OMP_NUM_THREADS")


def test_the_cli_sizes_torch_before_it_starts(tmp_path):
    """Through the console entry point, torch's pool is the usable CPUs, not the host's cores,
    (one CPU here, by affinity: what ``taskset`` or a container gives)."""
    code = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from skysearch.cli.app import main; sys.argv = ['skysearch', '--help']\n"
        "try: main()\nexcept SystemExit: pass\n"
        "import torch; print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in (*THREAD_VARIABLES, "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.split()[-2:] == ["1", "PASSIVE"]
