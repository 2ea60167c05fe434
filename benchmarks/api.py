"""The API path and the vLLM scoring backend beside the local transformers path, on the embedded model.

    python benchmarks/api.py                          # 3 eval images, 6 regions, greedy search
    python benchmarks/api.py --images 5 --regions 16

Builds (or reuses) the vLLM environment in .venvs/vllm (EAGLE_VLLM_VENV), serves a copy of the embedded model
with vLLM's CPU build on 127.0.0.1, and measures per image:

- ``local``: ``explain`` with the transformers adapter (answer generation included);
- ``api prompt_logprobs``: the same through the server, exact teacher forcing, one request per masked image;
- ``api top_logprobs``: the reference's top-20 protocol, one request per masked image and target token;
- ``scorer transformers`` / ``scorer vllm backend`` / ``scorer vllm server``: the scorer alone on the same 64
  masked copies of one image, s per masked copy after a warm-up, the best of 3: transformers with one torch
  thread and with torch's default, the vLLM offline engine in its own environment (one OpenMP thread,
  ``vllm_environment``), the API scorer against the server (prompt_logprobs, --concurrency requests in flight).

``s_per_masked_image`` puts every row on one scale (explain rows: s per image / masked copies per image), and
``speedup_vs_transformers_scorer`` divides the faster transformers scorer row by it. The scorer rows also give
``cpu_s_per_masked_image``, the CPU time of the scorer's own process (the transformers process; the vLLM
backend's, whose engine runs in it), and ``cpu_speedup_vs_transformers_1_thread``: on a machine shared with other
jobs it moves far less than wall-clock time (the server row has none: its work is in the server's processes).

Timings of explain are the best of --repeat runs per image (a fresh response cache each time).

Each row says whether the orders equal the local ones, the largest probability difference and the coverage. Every
API run starts from an empty response cache (repeats inside one search are still answered from it). Writes
data/08_reporting/benchmarks/api.csv and prints it. Not part of the test suite; on 2 shared CPU cores the
timings are noisy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from eagle_pipelines.api import explain, load_model
from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc
from eagle_pipelines.core.regions import superpixels
from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.models.vllm_backend import timing_sets
from eagle_pipelines.deploy.vllm_server import VllmServer, ensure_venv, score_in_venv, served_copy
from eagle_pipelines.parameters import parse

ROOT = Path(__file__).parents[1]
EMBEDDED = ROOT / "data/06_models/toy_qwen2_5_vl"
PROMPT = "Describe the image."


def _images(n: int) -> list[np.ndarray]:
    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": n})}), "eval")
    return [split.images[k] for k in sorted(split.images)]


def _aucs(a) -> tuple[float, float]:
    curves = Curves(a.area, a.insertion, a.deletion)
    return insertion_auc(curves), deletion_auc(curves)


def _best_seconds(score, masks: np.ndarray, repeat: int = 3) -> tuple[float, float, np.ndarray]:
    """s per masked copy of `score`, wall-clock and this process's CPU time, each the best of `repeat` timings on
    the sets of ``timing_sets`` (`masks` and its mirror images, as the vLLM backend is timed), and the
    probabilities of `masks`."""
    best, best_cpu, probs = float("inf"), float("inf"), None
    for masks_r in timing_sets(masks, repeat):
        start, cpu = time.perf_counter(), time.process_time()
        out = score(masks_r)
        best = min(best, (time.perf_counter() - start) / len(masks))
        best_cpu = min(best_cpu, (time.process_time() - cpu) / len(masks))
        probs = out if probs is None else probs
    return best, best_cpu, probs


def scorer_rows(local, venv: Path, served: Path, image: np.ndarray, work: Path) -> tuple[list[dict], dict]:
    """s per masked copy of the transformers scorer (with one torch thread and with torch's default) and of the
    vLLM offline backend (one OpenMP thread: ``vllm_server.vllm_environment``) on the same 64 masked copies.
    Returns the rows and what the server's scorer row needs (the image, the answer ids, the masks, the
    transformers probabilities)."""
    import torch

    image = local.model_image(image)
    answer = local.generate(image, PROMPT)
    ids = [*answer.token_ids, answer.end_token_id]
    masks = np.random.default_rng(0).random((64, *image.shape[:2])) > 0.4
    scorer = local.scorer(image, PROMPT, ids, list(range(len(ids))), memory_budget_mb=0, batch_size=64)
    default_threads = torch.get_num_threads()
    rows, expected = [], None
    for threads in dict.fromkeys([1, default_threads]):
        torch.set_num_threads(threads)
        scorer(~masks[:4])  # warm-up
        seconds, cpu, expected = _best_seconds(scorer, masks)
        rows.append({"path": "scorer transformers", "threads": threads, "images": 1, "s_per_image": seconds,
                     "cpu_s_per_masked_image": cpu, "masked_per_image": 64})
    torch.set_num_threads(default_threads)
    np.savez(work / "masks.npz", image=image, prompt=np.array(PROMPT), answer_ids=np.array(ids),
             positions=np.arange(len(ids)), masks=masks)
    out = score_in_venv(venv, work / "masks.npz", served, work / "vllm.json", work, dtype="float32",
                        max_model_len=256, enforce_eager=True, max_num_seqs=64, repeat=3)
    diff = float(np.abs(np.array(out["probs"]) - expected).max())
    rows.append({"path": "scorer vllm backend", "threads": 1, "images": 1, "s_per_image": out["seconds_per_image"],
                 "cpu_s_per_masked_image": out["cpu_seconds_per_image"], "masked_per_image": 64,
                 "max_prob_diff": diff, "engine_start_s": out["engine_seconds"]})
    return rows, {"image": image, "ids": ids, "masks": masks, "expected": expected}


def server_scorer_row(server: VllmServer, case: dict, concurrency: int) -> dict:
    """s per masked copy of the API scorer (prompt_logprobs, one request per copy, `concurrency` in flight) on the
    same 64 masked copies, the best of 3 (an empty response cache each time)."""
    best, probs = float("inf"), None
    with tempfile.TemporaryDirectory() as cache:
        for r, masks in enumerate(timing_sets(case["masks"], 3)):
            api = load_model(api_base=server.url, api_model=server.model_name, cache_dir=f"{cache}/{r}",
                             max_concurrency=concurrency)
            score = api.scorer(case["image"], PROMPT, case["ids"], list(range(len(case["ids"]))))
            start = time.perf_counter()
            out = score(masks)
            best = min(best, (time.perf_counter() - start) / len(masks))
            probs = out if probs is None else probs
    return {"path": "scorer vllm server", "threads": 1, "images": 1, "s_per_image": best, "masked_per_image": 64,
            "requests_per_image": 64, "max_prob_diff": float(np.abs(probs - case["expected"]).max())}


def explain_rows(local, server: VllmServer, images: list[np.ndarray], n_regions: int, repeat: int) -> list[dict]:
    """Per path: the best of `repeat` timings of each image's explain (a fresh response cache each time)."""
    names = ("local", "api prompt_logprobs", "api top_logprobs")
    runs: dict[str, list] = {k: [] for k in names}
    seconds = {k: 0.0 for k in names}
    requests = {k: 0 for k in names}
    with tempfile.TemporaryDirectory() as cache:
        for k, image in enumerate(images):
            regions = superpixels(local.model_image(image), n_segments=n_regions)
            for name in names:
                best, found = float("inf"), None
                for r in range(repeat):
                    model = local if name == "local" else load_model(
                        api_base=server.url, api_model=server.model_name, cache_dir=f"{cache}/{name}-{k}-{r}",
                        scoring=name.split()[1])
                    start = time.perf_counter()
                    found = explain(model, image, PROMPT, strategy="greedy", regions=regions, memory_budget_mb=0)
                    best = min(best, time.perf_counter() - start)
                seconds[name] += best
                requests[name] += found.meta.get("api", {}).get("sent", 0)
                runs[name].append(found)
    rows = []
    for name, found in runs.items():
        ref = runs["local"]
        same = [a.order.tolist() == b.order.tolist() for a, b in zip(found, ref)]
        auc = max(abs(x - y) for a, b in zip(found, ref) for x, y in zip(_aucs(a), _aucs(b)))
        cover = [a.meta["api"]["coverage"] for a in found if "api" in a.meta]
        rows.append({"path": name, "images": len(found), "s_per_image": seconds[name] / len(found),
                     "masked_per_image": float(np.mean([a.forward_passes for a in found])),
                     "requests_per_image": requests[name] / len(found) if name != "local" else None,
                     "same_order": f"{sum(same)}/{len(same)}", "max_auc_diff": auc,
                     "max_prob_diff": max(float(np.abs(a.insertion - b.insertion).max()) for a, b in zip(found, ref)),
                     "coverage": min(cover) if cover else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--regions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="timings per image and path; the best counts")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="the server's max_num_seqs and the API client's requests in flight")
    parser.add_argument("--out", type=Path, default=ROOT / "data/08_reporting/benchmarks/api.csv")
    args = parser.parse_args()
    venv = ensure_venv(os.environ.get("EAGLE_VLLM_VENV", ROOT / ".venvs/vllm"), python=sys.executable)
    local = load_model(str(EMBEDDED))
    images = _images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        served = served_copy(EMBEDDED, work / "served" / EMBEDDED.name)
        rows, case = scorer_rows(local, venv, served, images[min(1, len(images) - 1)], work)
        with VllmServer(venv, served, work / "server", max_num_seqs=args.concurrency) as server:
            rows.append(server_scorer_row(server, case, args.concurrency))
            rows += explain_rows(local, server, images, args.regions, args.repeat)
    table = pd.DataFrame(rows)
    table["s_per_masked_image"] = table["s_per_image"] / table["masked_per_image"].where(
        ~table["path"].str.startswith("scorer"), 1)
    one_thread = table["path"].eq("scorer transformers") & table["threads"].eq(1)
    fastest = table.loc[table["path"] == "scorer transformers", "s_per_masked_image"].min()
    table["speedup_vs_transformers_scorer"] = fastest / table["s_per_masked_image"]
    # CPU time of the scorer's own process: less sensitive than wall-clock to the other jobs on a shared machine
    # (the server's row has none: its work is in the server's processes)
    table["cpu_speedup_vs_transformers_1_thread"] = (table.loc[one_thread, "cpu_s_per_masked_image"].min()
                                                     / table["cpu_s_per_masked_image"])
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.6g")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
