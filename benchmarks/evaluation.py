"""The evaluation against the search, on the same machine in one run (issue 29): what scoring a target's methods
under the shared protocol costs beside EAGLE's search of the same target.

    python benchmarks/evaluation.py                  # 6 eval images, sentence level, the conf/base settings
    python benchmarks/evaluation.py --images 10 --threads 1

For each image: the answer, its superpixels, EAGLE's search (timed: the explanation; run twice, its scorer
embedding every patch of every masked copy (``search_plain_seconds``) and sharing them as ``explain()`` does
(``search_seconds``), which must give the same order and curves), the baselines' maps
(``baselines.methods``; not timed here), then the evaluation of the target as ``eagle_coco``'s ``evaluate`` node
scores it (one ``MaskBank``: EAGLE's record known, the random floor's region curves, every method's pixel
protocol), twice:

- ``per_target``: each target's scorer plans its memory (two probe passes) and embeds every patch of every
  masked copy (the evaluation before ``ScorerSetup``);
- ``shared``: the scorers share one memory plan and reuse the full and black images' patch embeddings, embed
  each distinct cut patch of a pass once and hand the vision tower its geometry (``core/evaluate.py:
  ScorerSetup``, ``models/qwen_vl.py``; what the node does now).

Both give the same rows bit for bit (checked here). Wall and process CPU seconds are measured (on a loaded
machine the wall seconds move with the load; the CPU seconds with one torch thread less so), with the counts:
masks scored, passes of the model (calls of its forward, probes included), patches embedded. Writes
data/08_reporting/benchmarks/evaluation.csv and prints it. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from eagle_pipelines.api import explain, load_model
from eagle_pipelines.core.baselines import BASELINES, run_baseline
from eagle_pipelines.core.evaluate import (MaskBank, ScorerSetup, know_record, order_saliency, random_order,
                                           region_curves, score_methods)
from eagle_pipelines.core.metrics import Curves
from eagle_pipelines.core.regions import RegionMap, slico
from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.models.qwen_vl import QwenVLTokenScorer
from eagle_pipelines.parameters import parse

ROOT = Path(__file__).parents[1]
PROMPT = "Describe the image."


def _conf(name: str, group: str) -> dict:
    return yaml.safe_load((ROOT / f"conf/base/{name}.yml").read_text())[group]


class Meter:
    """Counts the passes of a scorer's model (calls of ``_forward``, memory probes included), the masks they
    score and the patches the vision tower embeds (rows through the embedding's convolution: the shared scorer's
    assembled rows stand in after it), until ``stop``. One hook for the meter's life: passes may run on two
    threads at once."""

    def __init__(self, scorer):
        self._chunks, self._rows = [], []  # list.append: safe from two threads
        original = scorer._forward
        conv = getattr(getattr(scorer.adapter.model, "model", scorer.adapter.model), "visual").patch_embed.proj
        self._handle = conv.register_forward_hook(lambda module, args, out: self._rows.append(len(out)))

        def forward(chunk):
            self._chunks.append(len(chunk))
            return original(chunk)

        scorer._forward = forward

    calls = property(lambda self: len(self._chunks))
    masks = property(lambda self: sum(self._chunks))
    patches = property(lambda self: sum(self._rows))

    def stop(self) -> None:
        self._handle.remove()


def evaluate_target(scorer, a, maps: dict, steps: int, seed: int, image_id: int) -> list[dict]:
    """The rows ``evaluate`` makes for one sentence-level target: gathered in one bank, then read."""
    bank = MaskBank(scorer)
    regions = RegionMap(a.labels, {})
    order = random_order(regions.n_regions, seed, image_id, 0)

    def rows():
        know_record(bank, regions, a.order, a.insertion, a.deletion)
        methods = {"eagle": (order_saliency(a.order, a.labels), Curves(a.area, a.insertion, a.deletion)),
                   "random": (order_saliency(order, a.labels), region_curves(bank, regions, order))}
        methods.update({m: (s, None) for m, s in maps.items()})
        return score_methods(bank, methods, steps)

    with bank.gathering():
        rows()
    bank.flush()
    return [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows()]


def run(images: int, model_path: str, threads: int | None) -> pd.DataFrame:
    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_path)
    attribution = _conf("parameters_attribution", "attribution")
    superpixels = _conf("parameters_superpixels", "superpixels")
    evaluation = _conf("parameters_evaluation", "evaluation")
    baselines = parse("baselines", _conf("parameters_baselines", "baselines"))
    shapes = parse("shapes", _conf("parameters_data_preparation", "shapes"))
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": images})}),
                           "eval")
    targets = []
    search = {mode: {"wall": 0.0, "cpu": 0.0} for mode in ("plain", "shared")}
    share = QwenVLTokenScorer.share_patches
    for image_id, name in enumerate(sorted(split.images)):
        picture = model.model_image(np.asarray(split.images[name]))
        answer = model.generate(picture, PROMPT, max_new_tokens=32)
        regions = slico(picture, n_segments=superpixels["n_segments"], compactness=superpixels["compactness"],
                        max_num_iter=superpixels["max_num_iter"], sigma=superpixels["sigma"])
        found = {}
        for mode in ("plain", "shared"):  # the search without and with patch sharing (explain() turns it on)
            QwenVLTokenScorer.share_patches = share if mode == "shared" else (lambda self: False)
            try:
                wall, cpu = time.perf_counter(), time.process_time()
                found[mode] = explain(model, picture, PROMPT, answer=answer, regions=regions,
                                      strategy=attribution["strategy"], batch_size=attribution["batch_size"],
                                      search_params=attribution.get(attribution["strategy"]))
                search[mode]["wall"] += time.perf_counter() - wall
                search[mode]["cpu"] += time.process_time() - cpu
            finally:
                QwenVLTokenScorer.share_patches = share
        a = found["shared"]
        if not (np.array_equal(a.order, found["plain"].order) and np.array_equal(a.insertion, found["plain"].insertion)
                and np.array_equal(a.deletion, found["plain"].deletion)):
            raise SystemExit(f"image {image_id}: the search with shared patches found another order or curves")
        positions = list(range(len(answer.token_ids)))
        tf = model.teacher_forced(picture, PROMPT, answer.token_ids)
        maps = {m: run_baseline(m, tf, positions, regions.labels if BASELINES[m].needs_labels else None,
                                **baselines.settings(m)).map for m in baselines.methods}
        targets.append((image_id, picture, answer, positions, a, maps))
    rows, results = [], {}
    for mode in ("per_target", "shared"):
        setup = ScorerSetup() if mode == "shared" else None
        meters, out = [], []
        wall, cpu = time.perf_counter(), time.process_time()
        for image_id, picture, answer, positions, a, maps in targets:
            scorer = model.scorer(picture, PROMPT, answer.token_ids, positions, batch_size=evaluation["batch_size"])
            meters.append(Meter(scorer))
            if setup is not None:
                setup.prepare(scorer)
            out.append(evaluate_target(scorer, a, maps, evaluation["pixel_steps"], evaluation["random_seed"],
                                       image_id))
            meters[-1].stop()
            if setup is not None:
                setup.keep(scorer)
        results[mode] = out
        seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
        rows.append({"mode": mode, "targets": len(targets), "threads": torch.get_num_threads(),
                     "search_plain_seconds": search["plain"]["wall"],
                     "search_seconds": search["shared"]["wall"], "search_cpu_seconds": search["shared"]["cpu"],
                     "evaluation_seconds": seconds, "evaluation_cpu_seconds": cpu_seconds,
                     "evaluation_share_wall": seconds / (seconds + search["shared"]["wall"]),
                     "evaluation_share_cpu": cpu_seconds / (cpu_seconds + search["shared"]["cpu"]),
                     "model_calls": sum(m.calls for m in meters), "masks_through_model": sum(m.masks for m in meters),
                     "patches_embedded": sum(m.patches for m in meters),
                     "search_forward_passes": sum(t[4].forward_passes for t in targets)})
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    same = all(np.array_equal(np.asarray(x[k], dtype=float), np.asarray(y[k], dtype=float))
               if k != "method" and k != "protocol" and k != "curve" else x[k] == y[k]
               for tx, ty in zip(results["per_target"], results["shared"]) for x, y in zip(tx, ty) for k in x)
    for row in rows:
        row["rows_identical"] = same
    if not same:
        raise SystemExit("the two modes gave different metric rows")
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--model", default=str(ROOT / "data/06_models/toy_qwen2_5_vl"))
    args = parser.parse_args()
    table = run(args.images, args.model, args.threads)
    out = ROOT / "data/08_reporting/benchmarks/evaluation.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
