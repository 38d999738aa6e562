"""Embedding throughput of each encoder on CPU (2 threads by default), batch inference, no grad.

- small-cnn: SkySearch frame encoder at the GOES working resolution (234 x 360, 1 channel).
- efficientnet-lite0: ImageNet backbone + projection head (frames resized to 224 x 224).
- clip encoder: transformer over 12 frame embeddings (clips/s, and frames/s = 12 x clips/s),
  plus end to end (small-cnn frames + clip encoder) in frames/s.

Usage: .venv/bin/python bench/encoders.py [--threads 2] [--seconds 5] [--json]
The machine's load average is printed beside the numbers (shared cores skew them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from load import load_average
from skysearch.encoders.models.clip import ClipEmbedder, ClipEncoder, clip_config_for
from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder


def rate(fn, batch: torch.Tensor, seconds: float) -> float:
    """Items per second of ``fn(batch)`` over at least ``seconds`` (after one warm-up call)."""
    with torch.no_grad():
        fn(batch)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            fn(batch)
            done += len(batch)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_start = load_average()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (args.batch, 1, 234, 360), dtype=torch.uint8)
    small = build_frame_encoder(FrameEncoderConfig()).eval()
    lite0 = build_frame_encoder(FrameEncoderConfig(backbone="efficientnet-lite0")).eval()
    clip = ClipEncoder(clip_config_for(FrameEncoderConfig(), 12)).eval()
    sequences = torch.nn.functional.normalize(torch.randn(args.batch, 12, 256), dim=-1)
    clips = torch.randint(0, 256, (max(1, args.batch // 12), 1, 12, 234, 360), dtype=torch.uint8)
    end_to_end = ClipEmbedder(small, clip).eval()

    result = {
        "threads": args.threads,
        "frame_shape": [234, 360],
        "small_cnn_frames_per_s": rate(small, frames, args.seconds),
        "efficientnet_lite0_frames_per_s": rate(lite0, frames[:16], args.seconds),
        "clip_encoder_clips_per_s": rate(clip, sequences, args.seconds),
        "clip_end_to_end_frames_per_s": 12 * rate(end_to_end, clips, args.seconds),
        "load_average": {"start": load_start, "end": load_average()},
    }
    result["clip_encoder_frames_per_s"] = 12 * result["clip_encoder_clips_per_s"]
    for key, value in result.items():
        print(
            f"{key:34s} {value:.1f}" if isinstance(value, float) else f"{key:34s} {value}",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
