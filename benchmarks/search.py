"""Search strategies side by side on the embedded model: the paper's reference loop, our exact greedy, the
paper's efficient variant, our earlier bidirectional reading of it, lazy greedy and candidate-pool greedy.

    python benchmarks/search.py                      # n = 16, 32, 64 on 4 eval images
    python benchmarks/search.py --images 3 --regions 64
    python benchmarks/search.py --hit-rate           # word-level hit rate of the last eagle_coco run

- reference: the greedy definition run as the paper's scripts do: one forward pass per masked image, and the
  image processor re-run for every masked candidate;
- greedy: the same search, batched, with masked pixel_values composed directly;
- efficient: the paper's efficient variant as the authors' efficient_attribution.py runs it (search_scope 10,
  pending_samples 8, update_step 5);
- bidirectional: this project's earlier reading of it (a scored first backward pick, backward picks to the end);
- lazy: lazy greedy (stale marginal gains as bounds, 2 candidates refreshed per round);
- pooled: candidate-pool greedy (the default; pool size from a budget of 10% of greedy's passes);
- windowed: windowed greedy (the singles rank, then greedy over the 5 best- and the 1 worst-ranked unplaced
  regions for as many steps as fit in 1.2 x 4n passes).

Writes data/08_reporting/benchmarks/search.csv (and search.png: passes against insertion AUC per region count)
and prints it. Not part of the test suite.
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
from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc
from eagle_pipelines.core.regions import slico
from eagle_pipelines.data.coco import CocoIndex
from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.parameters import parse

ROOT = Path(__file__).parents[1]
PROMPT = "Describe the image."
STRATEGIES = {
    "reference": {"strategy": "greedy", "batch_size": 1, "compose": "processor"},
    "greedy": {"strategy": "greedy", "batch_size": 64},
    "efficient": {"strategy": "efficient", "batch_size": 64},
    "bidirectional": {"strategy": "bidirectional", "batch_size": 64},
    "lazy": {"strategy": "lazy", "batch_size": 64},
    "pooled": {"strategy": "pooled", "batch_size": 64},
    "windowed": {"strategy": "windowed", "batch_size": 64},
}


def run(images: int, regions: list[int], strategies: list[str], model_path: str) -> pd.DataFrame:
    model = load_model(model_path)
    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": images})}),
                           "eval")
    pictures = [split.images[k] for k in sorted(split.images)]
    rows = []
    for n in regions:
        results: dict[str, list] = {}
        for name in strategies:
            cfg = STRATEGIES[name]
            results[name] = []
            for picture in pictures:
                a = explain(model, picture, PROMPT, strategy=cfg["strategy"], batch_size=cfg["batch_size"],
                            regions=slico(picture, n_segments=n), compose=cfg.get("compose", "pixel_values"))
                results[name].append(a)
        greedy_orders = [a.order for a in results.get("greedy", results[strategies[0]])]
        reference_seconds = np.mean([a.seconds for a in results["reference"]]) if "reference" in results else None
        for name, attributions in results.items():
            curves = [Curves(a.area, a.insertion, a.deletion) for a in attributions]
            seconds = float(np.mean([a.seconds for a in attributions]))
            rows.append({
                "strategy": name, "n_regions": float(np.mean([a.n_regions for a in attributions])),
                "images": len(attributions),
                "forward_passes_per_image": float(np.mean([a.forward_passes for a in attributions])),
                "seconds_per_image": seconds,
                "peak_memory_mb": float(np.max([a.peak_memory_mb for a in attributions])),
                "insertion_auc": float(np.mean([insertion_auc(c) for c in curves])),
                "deletion_auc": float(np.mean([deletion_auc(c) for c in curves])),
                "same_order_as_greedy": float(np.mean([np.mean(a.order == g) for a, g in
                                                       zip(attributions, greedy_orders)])),
                "same_first_region_as_greedy": float(np.mean([a.order[0] == g[0] for a, g in
                                                              zip(attributions, greedy_orders)])),
                "speedup_vs_reference": float(reference_seconds / seconds) if reference_seconds else np.nan,
            })
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    return pd.DataFrame(rows)


def word_hit_rate() -> dict:
    """Fraction of the last eagle_coco run's word-level attributions whose first-ranked region lies mostly
    (> 50% of its pixels) inside the object's mask."""
    output = ROOT / "data/07_model_output/eagle_coco/word"
    index = CocoIndex(json.loads((ROOT / "data/01_raw/shapes/eval/annotations/instances.json").read_text()))
    folder = max((p for p in output.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
    hits = total = 0
    for file in sorted(folder.glob("*.npz")):
        a = Attribution.load(file.with_suffix(""))
        obj = next(o for o in index.objects(a.meta["image_id"]) if o.annotation_id == a.meta["annotation_id"])
        top = a.labels == a.order[0]
        hits += int((top & obj.mask.astype(bool)).sum() / top.sum() > 0.5)
        total += 1
    return {"folder": folder.name, "attributions": total, "hit_rate": hits / max(total, 1)}


def plot(table: pd.DataFrame, path: Path) -> None:
    """Cost against quality, one panel per region count: forward passes per image (log scale) against insertion
    AUC, one point per strategy, seconds per image in the legend."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(table["n_regions"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        rows = table[table["n_regions"] == n]
        for k, row in enumerate(rows.itertuples(index=False)):
            ax.scatter(row.forward_passes_per_image, row.insertion_auc, color=f"C{k}", s=40,
                       marker="os^Dv"[k % 5], alpha=0.8, label=f"{row.strategy}: {row.seconds_per_image:.2f} s/image")
        low, high = rows["insertion_auc"].min(), rows["insertion_auc"].max()
        middle = (low + high) / 2
        ax.set_ylim(min(low, middle - 0.01) - 0.005, min(1.0, max(high, middle + 0.01)) + 0.005)
        ax.legend(fontsize=7, loc="lower right")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"n = {n:g} regions", fontsize=9)
        ax.set_xlabel("forward passes per image")
        ax.set_ylabel("insertion AUC (higher is better)")
        ax.grid(alpha=0.3)
    fig.suptitle("Search strategies: cost against faithfulness (reference and greedy coincide: same order)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--regions", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--model", default=str(ROOT / "data/06_models/toy_qwen2_5_vl"), help="checkpoint folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--hit-rate", action="store_true", help="only the word-level hit rate of the last run")
    parser.add_argument("--out", default=str(ROOT / "data/08_reporting/benchmarks/search.csv"),
                        help="the table (CSV); the figure goes beside it (.png)")
    args = parser.parse_args()
    if args.hit_rate:
        print(word_hit_rate())
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    table = run(args.images, args.regions, args.strategies, args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    plot(table, out.with_suffix(".png"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
