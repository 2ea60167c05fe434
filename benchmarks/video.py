"""Search strategies over a clip's spatio-temporal regions (the reference's 5 × 5 grid per frame) on the embedded
model: forward passes, seconds, faithfulness AUCs and agreement with exact greedy, per clip.

    python benchmarks/video.py                                   # 4 and 8 frames, 2 clips each
    python benchmarks/video.py --frames 4 --clips 3 --strategies greedy efficient pooled lazy
    python benchmarks/video.py --model data/06_models/<a video-trained model> --prompt "What appears in the video?"

Clips: the embedded clips with a known cause (``data/clips.py``: static shapes, one more shape appears in one
frame), at 112 × 112 per frame. Every strategy explains the same answer (generated once per clip) at sentence
level; n = 25 · frames regions. ``same as greedy``: the fraction of order positions holding greedy's region;
``first frame hit``: the first-ranked region lies in the event frame; ``first cell hit``: it overlaps the event
object. Writes data/08_reporting/benchmarks/video.csv and prints the per-strategy means. Not part of the tests;
seconds depend on the machine's load (forward passes are exact).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from eagle_pipelines.api import load_model
from eagle_pipelines.api_video import explain_video
from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc
from eagle_pipelines.core.regions import frame_grid
from eagle_pipelines.data.clips import ClipParams, generate_clip
from eagle_pipelines.data.params import ShapesParams

ROOT = Path(__file__).parents[1]
SEARCH = {"efficient_reference_video": {"strategy": "efficient",
                                        "search_params": {"search_scope": 8, "pending_samples": 4, "update_step": 10}}}


def run(frames: list[int], clips: int, strategies: list[str], model_path: str, prompt: str,
        batch_size: int) -> pd.DataFrame:
    model = load_model(model_path)
    shapes = ShapesParams(**yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])
    rows = []
    for n in frames:
        for index in range(clips):
            clip = generate_clip(shapes, ClipParams(frames=n), "eval", index)
            video = model.model_clip(clip.frames)
            regions = frame_grid(n, *video.frames.shape[1:3], rows=5, cols=5)
            answer = model.generate_video(video, prompt, max_new_tokens=16)
            greedy_order = None
            for name in strategies:
                spec = SEARCH.get(name, {"strategy": name})
                start = time.perf_counter()
                a = explain_video(model, video, prompt, answer=answer, regions=regions, batch_size=batch_size,
                                  memory_budget_mb=0, **spec)
                wall = time.perf_counter() - start
                curves = Curves(a.area, a.insertion, a.deletion)
                if name == "greedy":
                    greedy_order = a.order
                first = a.order[0]
                event = clip.event_masks
                rows.append({
                    "frames": n, "clip": index, "regions": a.n_regions, "strategy": name, "answer": a.answer,
                    "forward_passes": a.forward_passes, "seconds": wall,
                    "insertion_auc": insertion_auc(curves), "deletion_auc": deletion_auc(curves),
                    "same_as_greedy": (float(np.mean(a.order == greedy_order)) if greedy_order is not None
                                       else np.nan),
                    "first_frame_hit": float(a.top_frame() == clip.event_frame),
                    "first_cell_hit": float(event[regions.labels == first].any()),
                })
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[4, 8])
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--strategies", nargs="+", default=["greedy", "efficient", "pooled"])
    p.add_argument("--model", default=str(ROOT / "data/06_models/toy_qwen2_5_vl"))
    p.add_argument("--prompt", default="Describe the image.")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "data/08_reporting/benchmarks/video.csv")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    table = run(args.frames, args.clips, args.strategies, args.model, args.prompt, args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.4f")
    summary = (table.groupby(["frames", "regions", "strategy"], sort=False)
               [["forward_passes", "seconds", "insertion_auc", "deletion_auc", "same_as_greedy", "first_frame_hit",
                 "first_cell_hit"]].mean())
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
