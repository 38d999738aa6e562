"""Cross-satellite clip search (issue 18): one model on two satellites vs one model per
satellite, each scored on the held-out later part of every satellite, beside raw pixels,
ImageNet features and random on the same queries and candidates.

Data: GOES-East IR of Hurricane Irma (2017, ../shared/data/goes-irma-2017/infrared) and
Digital Typhoon GMS-3 IR of typhoon 198702 (1987, ../shared/data/digital-typhoon), both
channel ``ir``, clips of ``--length`` x 60 min. Each satellite is split on its own time range
(the last 20 % held out), so every model is scored on clips it never saw; a satellite a model
was not trained on is held out the same way (the same queries).

    .venv/bin/python bench/cross_satellite.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from skysearch.config import Workspace

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SOURCES = [DATA / "goes-irma-2017" / "infrared", DATA / "digital-typhoon" / "image" / "198702"]
SATELLITES = ["goes-east", "gms3"]
TRAININGS = {"both": SATELLITES, "goes-east only": ["goes-east"], "gms3 only": ["gms3"]}


def build(ws: Workspace, length: int) -> None:
    """Ingest both archives and assemble ``length`` x 60 min ir clips (no-ops when done)."""
    from skysearch.ingest.clips import build_clips
    from skysearch.ingest.pipeline import ingest

    ingest(SOURCES, ws, workers=2, progress=False)
    build_clips(ws, length=length, gap_minutes=60)


def train(ws: Workspace, satellites: list[str], args: argparse.Namespace) -> str:
    """A frame then a clip model on the satellites' training ranges; the clip model's id."""
    from skysearch.encoders.training.clips import train_clips
    from skysearch.encoders.training.frames import DataSpec, train_frames
    from skysearch.encoders.training.objectives import CLIP_LR, EncoderTrainConfig

    data = DataSpec(satellites, ["ir"], args.length, 60)
    frames = EncoderTrainConfig(epochs=args.frame_epochs, lr=1e-3, device="cpu")
    frame = train_frames(ws, data, frames)
    clips = EncoderTrainConfig(
        epochs=args.clip_epochs, lr=CLIP_LR, device="cpu", min_pair_hours=12.0
    )
    return train_clips(ws, clips, frame.model_id).model_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/skysearch-xsat-bench"))
    parser.add_argument("--length", type=int, default=6)
    parser.add_argument("--frame-epochs", type=int, default=1)
    parser.add_argument("--clip-epochs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from skysearch.retrieval.evaluation.clips import EvalOptions, evaluate_clips

    ws = Workspace(args.workspace)
    build(ws, args.length)
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "scores": {}}
    for sat in SATELLITES:
        table: dict[str, dict[str, float]] = {}
        for name, satellites in TRAININGS.items():
            model = train(ws, satellites, args) if sat == SATELLITES[0] else out["models"][name]
            out.setdefault("models", {})[name] = model
            baselines = name == "both"  # the same queries and candidates for every model
            result = evaluate_clips(ws, model, EvalOptions(satellite=sat, baselines=baselines))
            for method in result["ndcg_at_10"]:
                label = f"trained: {name}" if method == "trained" else method
                table[label] = {m: result[m][method] for m in ("ndcg_at_10", "recall_at_10")}
            out.setdefault("protocol", {})[sat] = {
                k: result["protocol"][k] for k in ("queries", "holdout_start", "mean_candidates")
            }
        out["scores"][sat] = table
        print(f"held-out {sat} queries: {out['protocol'][sat]}", file=sys.stderr)
        for label, row in table.items():
            print(f"  {label:24} ndcg@10 {row['ndcg_at_10']:.3f}  "
                  f"recall@10 {row['recall_at_10']:.3f}", file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
