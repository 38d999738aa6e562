"""The demo's steps idle and beside a fixed CPU load from other processes, in the same run.

Each run is ``skysearch demo --json`` in a fresh workspace (a subprocess: nothing is reused),
once on an otherwise idle machine and once beside ``--load N`` processes that each spin one
core in pure Python (load average ~N from others). Per step it prints the idle seconds, the
loaded seconds and their ratio. ``--variant NAME:KEY=VALUE,...`` (repeatable) runs the same
pair again with extra environment, e.g. thread settings, so defaults are compared in one run:

    python bench/contention.py --load 4 --json
    python bench/contention.py --variant before:OMP_WAIT_POLICY= --variant defaults: --json

(An empty ``OMP_WAIT_POLICY`` gives the OpenMP runtime's own default: spin, then sleep; the
CLI's default is ``PASSIVE``, see ``skysearch.cpus``.)

The goal (issue 14): at load ~4 from other processes, each demo step takes <= 3x its idle time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load import load_average

SKYSEARCH = Path(sys.executable).with_name("skysearch")
SPIN = "while True:\n    pass\n"


def run_demo(env: dict[str, str]) -> dict:
    """``skysearch demo --json`` in a fresh workspace; its report plus the wall time."""
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        started = time.perf_counter()
        done = subprocess.run(
            [str(SKYSEARCH), "demo", "-w", tmp, "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"demo failed ({done.returncode}):\n{done.stderr[-2000:]}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        return report


def loaded(n: int, env: dict[str, str]) -> tuple[dict, list[float]]:
    """The demo beside ``n`` spinning processes; also the load averages seen at its end."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        time.sleep(5)  # let the spinners take their share before the demo starts
        report = run_demo(env)
        return report, load_average()
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return name, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, default=4, help="spinning processes beside the demo")
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,...")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("defaults", {})]
    out = {"load_processes": args.load, "cpus": os.cpu_count(), "variants": {}}
    for name, env in variants:
        before = load_average()
        idle = run_demo(env)
        busy, load_seen = loaded(args.load, env)
        steps = {}
        for a, b in zip(idle["steps"], busy["steps"], strict=True):
            ratio = b["seconds"] / max(a["seconds"], 1e-9)
            steps[a["name"]] = {
                "idle_s": a["seconds"],
                "loaded_s": b["seconds"],
                "ratio": round(ratio, 2),
            }
        out["variants"][name] = {
            "env": env,
            "steps": steps,
            "total": {
                "idle_s": idle["total_seconds"],
                "loaded_s": busy["total_seconds"],
                "ratio": round(busy["total_seconds"] / max(idle["total_seconds"], 1e-9), 2),
            },
            # start: before the idle run; end: at the end of the loaded run, spinners still on
            "load_average": {"start": before, "end": load_seen},
        }
        load_end = out["variants"][name]["load_average"]["end"]
        print(
            f"\n{name} {env or ''} (load at end of loaded run {load_end[0]:.1f})", file=sys.stderr
        )
        print(f"{'step':48} {'idle s':>8} {'loaded s':>9} {'ratio':>6}", file=sys.stderr)
        for step, row in [*steps.items(), ("total", out["variants"][name]["total"])]:
            print(
                f"{step:48} {row['idle_s']:8.1f} {row['loaded_s']:9.1f} {row['ratio']:6.2f}",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
