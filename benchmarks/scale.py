"""What running the per-item jobs on Ray costs and gains, on the embedded model (figures for docs/scale.md).

    python benchmarks/scale.py                          # 6 images, 16 superpixels, 1 and 2 workers
    python benchmarks/scale.py --images 8 --segments 24 --workers 1 2 4

Measures, each in a fresh copy of the project's configuration (under a temporary folder, with the shipped model):

- start-up: Ray started by the run (``compute.ray.address: local``) until every worker answers, and the time
  the first item of each worker takes beyond the others (its model load);
- per-task overhead: trivial jobs (a small record each) through ``run_jobs`` on one Ray worker against the same
  jobs in the driver; the difference per item is what Ray adds (pickling, scheduling, the result's way back);
- throughput: eagle_coco (sentence level, the TAM baseline) sequentially and on 1, 2... workers: items/s of each
  per-item node (from its manifest's seconds), the pipeline's wall time, and the bytes moved per item (job in,
  value out, inputs shared once per node);
- memory: the resident size of each worker process at the end (model loaded);
- parallelism without CPU contention: jobs that wait 0.25 s each (as if a GPU made them) on 1 and 2 workers.

The sequential run uses as many torch threads as one worker (``--driver-threads``, 1), so that 1 worker against
sequential shows Ray's cost and not a thread count; on a busy machine more threads than free cores slow torch down
many times over.

Writes data/08_reporting/benchmarks/scale.json and prints it. Not part of the test suite; Ray's files go under the
temporary folder (HOME and RAY_TMPDIR), so nothing is left in ~/.ray.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
PRODUCERS = {"superpixels": "data/02_intermediate/eagle_coco/superpixels.json",
             "EAGLE": "data/07_model_output/eagle_coco/attributions.json",
             "baselines": "data/07_model_output/eagle_coco/baselines.json",
             "evaluation": "data/07_model_output/eagle_coco/evaluation.json"}


def _project(folder: Path) -> Path:
    from kedro.framework.startup import bootstrap_project

    shutil.copytree(ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    (folder / ".telemetry").write_text("consent: false\n")
    (folder / "src").mkdir()
    (folder / "data" / "06_models").mkdir(parents=True)
    os.symlink(ROOT / "data/06_models/toy_qwen2_5_vl", folder / "data/06_models/toy_qwen2_5_vl")
    bootstrap_project(folder)
    return folder


class _Watch:
    """Keeps the run's executor and its workers' memory before the run closes them."""

    def __init__(self):
        self.executor = None
        self.rss_mb: list[float] = []

    def hooks(self):
        from kedro.framework.hooks import hook_impl

        from eagle_pipelines.core.memory import status_mb
        from eagle_pipelines.io import executors

        watch = self

        class Hook:
            @hook_impl
            def after_node_run(self):
                watch.executor = executors.active() or watch.executor

            @hook_impl
            def after_pipeline_run(self):  # called before ComputeHook's (registered later): workers still up
                if isinstance(watch.executor, executors.RayExecutor) and watch.executor.slots:
                    watch.rss_mb = [r for r in (status_mb("VmRSS", pid) for pid in watch.executor.pids())
                                    if r is not None]

        return Hook()


def pipeline(folder: Path, params: dict, compute: dict) -> dict:
    from kedro.framework.session import KedroSession

    project = _project(folder)
    watch = _Watch()
    start = time.perf_counter()
    with KedroSession.create(project_path=project, runtime_params={**params, "compute": compute}) as session:
        session._hook_manager.register(watch.hooks())
        session.run(pipeline_names=["eagle_coco"])
    wall = time.perf_counter() - start
    nodes = {}
    for name, path in PRODUCERS.items():
        manifest = json.loads((project / path).read_text())
        n = len(manifest["items"]) + len(manifest["skipped"])
        nodes[name] = {"items": n, "seconds": manifest["seconds"],
                       "items_per_s": round(n / manifest["seconds"], 3) if manifest["seconds"] else None}
    out = {"wall_s": round(wall, 1), "nodes": nodes}
    executor = watch.executor
    if executor is not None and getattr(executor, "stats", None):
        stats = executor.stats
        made = sum(s["items"] for s in stats)
        out.update({
            "start_s": round(executor.start_seconds, 2),
            "worker_rss_mb": [round(r) for r in watch.rss_mb],
            "bytes_in_per_item": round(sum(s["job_bytes"] for s in stats) / made),
            "bytes_out_per_item": round(sum(s["out_bytes"] for s in stats) / made),
            "shared_bytes_per_node": {s["description"]: s["shared_bytes"] for s in stats},
            "bytes_per_node_item": {s["description"]: {"in": round(s["job_bytes"] / s["items"]),
                                                       "out": round(s["out_bytes"] / s["items"])} for s in stats},
            "workers": {s["description"]: s["workers"] for s in stats},
        })
    return out


def overhead(folder: Path, jobs: int) -> dict:
    """Per-item cost of Ray itself: trivial jobs in the driver, then on one worker (Ray started by the executor)."""
    from eagle_pipelines.io import executors
    from eagle_pipelines.io.executors import run_jobs
    from eagle_pipelines.io.items import ItemStore, Job
    from eagle_pipelines.parameters import ComputeParams

    def trivial(k: int) -> Job:
        return Job(f"j{k}", "fp", lambda k=k: {"k": k, "square": k * k})

    executors.configure(None)
    start = time.perf_counter()
    run_jobs(ItemStore(folder / "sequential", "record"), [trivial(k) for k in range(jobs)], "trivial")
    driver = (time.perf_counter() - start) / jobs
    executors.configure(ComputeParams(executor="ray", ray={"workers": 1}))
    executor = executors.current()
    start = time.perf_counter()
    executor.start()
    start_1 = time.perf_counter() - start
    run_jobs(ItemStore(folder / "warm", "record"), [trivial(k) for k in range(20)], "warm-up")
    start = time.perf_counter()
    run_jobs(ItemStore(folder / "ray", "record"), [trivial(k) for k in range(jobs)], "trivial")
    on_ray = (time.perf_counter() - start) / jobs
    stats = executor.stats[-1]
    waiting = {1: _waiting(folder / "waiting1")}
    executors.configure(ComputeParams(executor="ray", ray={"workers": 2}))
    start = time.perf_counter()
    executors.current().start()
    start_2 = time.perf_counter() - start
    waiting[2] = _waiting(folder / "waiting2")
    executors.reset()
    return {"jobs": jobs, "driver_ms_per_item": round(driver * 1e3, 2), "ray_ms_per_item": round(on_ray * 1e3, 2),
            "ray_overhead_ms_per_item": round((on_ray - driver) * 1e3, 2), "start_1_worker_s": round(start_1, 2),
            "start_2_workers_s": round(start_2, 2), "bytes_in_per_item": round(stats["job_bytes"] / jobs),
            "bytes_out_per_item": round(stats["out_bytes"] / jobs),
            "waiting_jobs_items_per_s": {n: round(v, 2) for n, v in waiting.items()}}


def _waiting(folder: Path, jobs: int = 16, seconds: float = 0.25) -> float:
    """Items/s of jobs that wait `seconds` each without using a CPU (stand-ins for items a GPU makes: they do not
    compete for this machine's cores), on the current executor's workers."""
    from eagle_pipelines.io.executors import run_jobs
    from eagle_pipelines.io.items import ItemStore, Job

    def wait(k: int) -> Job:
        return Job(f"w{k}", "fp", lambda k=k: (time.sleep(seconds), {"k": k})[1])

    start = time.perf_counter()
    run_jobs(ItemStore(folder, "record"), [wait(k) for k in range(jobs)], "waiting")
    return jobs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--trivial", type=int, default=200, help="trivial jobs of the per-task overhead")
    parser.add_argument("--driver-threads", type=int, default=1,
                        help="torch threads of this process (the sequential run), like a worker's cpus_per_worker")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.driver_threads)
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    params = {"shapes": {"splits": {"eval": args.images}}, "superpixels": {"n_segments": args.segments},
              "evaluation": {"pixel_steps": 8}, "reporting": {"figure_samples": 1},
              "eagle_coco": {"max_new_tokens": 8}, "baselines": {"methods": ["tam"]},
              "attribution": {"levels": ["sentence"]}}
    with tempfile.TemporaryDirectory(prefix="eagle-scale-") as tmp:
        tmp = Path(tmp)
        (tmp / "home").mkdir()
        os.environ["HOME"] = str(tmp / "home")  # Ray writes ~/.ray/auth_token
        os.environ["RAY_TMPDIR"] = str(tmp / "ray")
        result = {"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(),
                              "driver_threads": args.driver_threads}, "params": params,
                  "overhead": overhead(tmp / "overhead", args.trivial),
                  "sequential": pipeline(tmp / "sequential", params, {"executor": "sequential"})}
        for n in args.workers:
            result[f"ray_{n}"] = pipeline(tmp / f"ray{n}", params, {"executor": "ray", "ray": {"workers": n}})
    seq = result["sequential"]["nodes"]["EAGLE"]["seconds"]
    for n in args.workers:
        run = result[f"ray_{n}"]
        run["eagle_speedup"] = round(seq / run["nodes"]["EAGLE"]["seconds"], 2)
        per_worker = [w["seconds"] / w["items"] for w in run["workers"].get("EAGLE", []) if w["items"]]
        run["eagle_worker_s_per_item"] = round(statistics.mean(per_worker), 3) if per_worker else None
    out = ROOT / "data/08_reporting/benchmarks/scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
