"""Forward passes and seconds per image of each search strategy on the embedded model, and the word-level hit
rate of an eagle_coco run.

    python benchmarks/search_cost.py --images 3 --regions 16 32 64
    python benchmarks/search_cost.py --hit-rate-only     # after `kedro run --pipeline=eagle_coco`

Not part of the test suite: it prints a table (and writes data/08_reporting/benchmarks/search_cost.csv).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from eagle_pipelines.api import explain, load_model
from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.data.coco import CocoIndex
from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.parameters import parse

ROOT = Path(__file__).parents[1]


def search_cost(images: int, regions: list[int], strategies: list[str]) -> pd.DataFrame:
    model = load_model(str(ROOT / "data/06_models/toy_qwen2_5_vl"))
    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": images})}),
                           "eval")
    rows = []
    for n in regions:
        for strategy in strategies:
            passes, seconds, memory, ins, counts = [], [], [], [], []
            for name in sorted(split.images):
                a = explain(model, split.images[name], "Describe the image.", strategy=strategy, n_regions=n)
                passes.append(a.forward_passes)
                seconds.append(a.seconds)
                memory.append(a.peak_memory_mb)
                counts.append(a.n_regions)
                x = np.concatenate([[0.0], a.area])
                ins.append(np.trapezoid(np.concatenate([[a.empty_score.mean()], a.insertion.mean(1)]), x))
            rows.append({"strategy": strategy, "n_segments": n, "regions_mean": np.mean(counts), "images": images,
                         "forward_passes_per_image": np.mean(passes), "seconds_per_image": np.mean(seconds),
                         "peak_memory_mb": np.max(memory), "insertion_auc": np.mean(ins)})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def word_hit_rate(output: Path, instances: Path) -> dict:
    """Fraction of word-level attributions whose first-ranked region lies mostly (>50%) inside the object."""
    index = CocoIndex(json.loads(instances.read_text()))
    hits, total = 0, 0
    folders = sorted((p for p in output.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
    for file in sorted(folders[-1].glob("*.npz")):
        a = Attribution.load(file.with_suffix(""))
        obj = next(o for o in index.objects(a.meta["image_id"]) if o.annotation_id == a.meta["annotation_id"])
        top = a.labels == a.order[0]
        hits += (top & obj.mask.astype(bool)).sum() / top.sum() > 0.5
        total += 1
    return {"folder": folders[-1].name, "attributions": total, "hit_rate": hits / max(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--regions", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--strategies", nargs="+", default=["greedy", "efficient"])
    parser.add_argument("--hit-rate-only", action="store_true")
    args = parser.parse_args()
    word = ROOT / "data/07_model_output/eagle_coco/word"
    if word.exists():
        print("word-level hit rate:", word_hit_rate(word, ROOT / "data/01_raw/shapes/eval/annotations/instances.json"))
    if args.hit_rate_only:
        return
    table = search_cost(args.images, args.regions, args.strategies)
    out = ROOT / "data/08_reporting/benchmarks/search_cost.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
