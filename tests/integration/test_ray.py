"""``compute.executor: ray`` on a real local Ray instance (started and stopped here, with HOME and Ray's temporary
folder under tmp_path): a tiny eagle_coco gives the same items and metrics as the sequential run; a worker killed
mid-item is restarted and its item made again, nothing lost or written twice; an item that fails for a data
reason is skipped once, never retried, and one that kills its worker every time fails after its retries.

"The same items": every array of every item is byte for byte the same, and every JSON field is equal except the
facts that differ between any two runs (seconds, peak memory, the free memory the scorer planned with); npz files
themselves carry the zip time stamp of their writing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from kedro.framework.hooks import hook_impl  # noqa: E402
from kedro.framework.session import KedroSession  # noqa: E402

from eagle_pipelines.io import executors  # noqa: E402
from eagle_pipelines.io.executors import run_jobs  # noqa: E402
from eagle_pipelines.io.items import ItemStore, Job, Skipped  # noqa: E402
from eagle_pipelines.parameters import ComputeParams  # noqa: E402
from tests.conftest import copy_project  # noqa: E402
from tests.integration.servers import TINY, local_ray, torch_threads  # noqa: E402

pytestmark = pytest.mark.slow
#: the driver and the workers run with the same torch threads (set for this module below, whatever an earlier test
#: left): a float map's last bits depend on the thread count (TAM's reductions differ between 1 and 2 threads on
#: some hosts), and these tests compare arrays byte for byte
THREADS = 1
RAY = {"compute": {"executor": "ray", "ray": {"workers": 2, "cpus_per_worker": THREADS}}}
OUT = Path("data/07_model_output/eagle_coco")
SUPERPIXELS = Path("data/02_intermediate/eagle_coco")
METRICS = Path("data/08_reporting/eagle_coco/metrics.csv")
BAD_IMAGE = Path("data/01_raw/eagle_coco/eval/images/eval_000002.png")
#: facts of a run, not of its result (timings, memory measured while it ran; per_image_mb is the larger of the
#: resident-set and tensor growth, so it follows the process's resident set: 0.64 MB in one run, 0.93 in another)
MEASURED = {"seconds", "peak_memory_mb", "method_seconds", "eval_seconds", "budget_mb", "base_mb",
            "per_image_resident_mb", "per_image_mb"}


@pytest.fixture(scope="module", autouse=True)
def driver_threads():
    """The driver's torch threads are the workers' (``cpus_per_worker``) for this module, then as they were."""
    with torch_threads(THREADS):
        yield


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """A local Ray instance for this module (Ray writes ~/.ray, so HOME is a temporary folder)."""
    with local_ray(tmp_path_factory.mktemp("ray"), THREADS):
        yield


class BadImageAfterAnswers:
    """Rewrites one image once it is answered (one pixel changed): its items fail for a data reason (the image
    changed since it was answered) and are recorded as skipped."""

    def __init__(self, project: Path):
        self.image = project / BAD_IMAGE

    @hook_impl
    def after_node_run(self, node):
        if node.name.endswith("generate_answers"):
            from PIL import Image

            pixels = np.array(Image.open(self.image).convert("RGB"))
            pixels[0, 0] = 255 - pixels[0, 0]
            Image.fromarray(pixels).save(self.image)


def _run(project: Path, extra: dict | None = None) -> None:
    params = json.loads(json.dumps(TINY))
    params.update(extra or {})
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session._hook_manager.register(BadImageAfterAnswers(project))
        session.run(pipeline_names=["eagle_coco"])


def _result(value, root: str):
    """A JSON value without what is measured, with the project folder written as <root>."""
    if isinstance(value, dict):
        return {k: _result(v, root) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_result(v, root) for v in value]
    return value.replace(root, "<root>") if isinstance(value, str) else value


def _manifest(project: Path, producer: str) -> dict:
    return json.loads((project / (SUPERPIXELS if producer == "superpixels" else OUT) / f"{producer}.json").read_text())


def _items(project: Path) -> dict[str, object]:
    """Every item and manifest of eagle_coco (superpixels and model output): arrays as (dtype, shape, bytes), JSON
    as its result."""
    out = {}
    files = sorted(f for folder in (SUPERPIXELS, OUT) for f in (project / folder).rglob("*"))
    for file in files:
        if not file.is_file() or file.name.startswith("."):
            continue
        name = file.relative_to(project / "data").as_posix()
        if file.suffix == ".sha256":  # the item's checksums: each must hold for its own run's files (the JSON
            # files carry measured seconds, so their hashes differ between runs); compared by the files they cover
            record = json.loads(file.read_text())
            for suffix, digest in record["sha256"].items():
                assert hashlib.sha256(file.with_suffix(suffix).read_bytes()).hexdigest() == digest, (file, suffix)
            out[name] = {k: v for k, v in record.items() if k != "sha256"} | {"files": sorted(record["sha256"])}
        elif file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                out[name] = {k: (_result(json.loads(str(data[k])), str(project)) if data[k].dtype.kind == "U"
                                 else (str(data[k].dtype), data[k].shape, data[k].tobytes())) for k in data.files}
        else:
            out[name] = _result(json.loads(file.read_text()), str(project))
    return out


def _metrics(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / METRICS).drop(columns=["seconds_per_sample", "peak_memory_mb"])


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("sequential"), shipped_model=True)
    _run(project)
    return project


def test_a_ray_run_makes_the_same_items_and_metrics_as_a_sequential_run(ray_instance, sequential, tmp_path):
    project = copy_project(tmp_path, shipped_model=True)
    _run(project, RAY)
    expected, got = _items(sequential), _items(project)
    assert sorted(got) == sorted(expected)
    assert len([n for n in got if "/attributions/" in n and n.endswith(".npz")]) == 2
    for name in expected:
        assert got[name] == expected[name], name
    pd.testing.assert_frame_equal(_metrics(project), _metrics(sequential))
    assert set(_metrics(project).n_samples) == {2}

    # the image changed after its answer: skipped with the reason, not retried, in both runs alike
    superpixels = _manifest(project, "superpixels")
    assert sorted(superpixels["items"]) == ["3000000", "3000001"]
    assert "changed since it was answered" in superpixels["skipped"]["3000002"]["reason"]
    attributions = _manifest(project, "attributions")
    assert "has no superpixels" in attributions["skipped"]["sentence/3000002"]["reason"]
    assert not attributions["failed"] and not superpixels["failed"]


def test_a_worker_killed_mid_item_is_restarted_and_nothing_is_lost_or_made_twice(ray_instance, sequential, tmp_path,
                                                                                 monkeypatch):
    project = copy_project(tmp_path, shipped_model=True)
    puts: Counter = Counter()
    put = ItemStore.put

    def counting_put(store, key, fp, value):
        puts[(store.path.name, key)] += 1
        put(store, key, fp, value)

    monkeypatch.setattr(ItemStore, "put", counting_put)
    seen: dict = {}
    stop = threading.Event()

    def kill_a_worker_mid_item():
        """SIGKILL the worker that has been making an item for 0.3 s (its first one loads the model: seconds)."""
        while not stop.is_set():
            executor = executors.active()
            if isinstance(executor, executors.RayExecutor) and executor.slots:
                busy = [(s, t) for s, (_, t) in list(executor.in_flight.items()) if time.monotonic() - t > 0.3]
                if busy:
                    slot = busy[0][0]
                    pid = executor.pids()[slot]
                    os.kill(pid, signal.SIGKILL)
                    seen.update(executor=executor, slot=slot, pid=pid, key=executor.in_flight.get(slot))
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker_mid_item, daemon=True)
    killer.start()
    try:
        _run(project, RAY)
    finally:
        stop.set()
        killer.join()
    assert seen, "no worker was killed: the test means nothing"
    executor = seen["executor"]
    assert {"worker": seen["slot"], "old_pid": seen["pid"]}.items() <= executor.restarts[0].items()
    assert executor.restarts[0]["new_pid"] != seen["pid"]
    assert executor.retried, "the killed worker's item was not made again by its new process"

    # nothing lost: the same items as the sequential run; nothing made twice: each written once
    expected = _items(sequential)
    assert _items(project) == expected
    pd.testing.assert_frame_equal(_metrics(project), _metrics(sequential))
    made = {(store, key) for store in ("superpixels", "attributions", "baselines", "evaluation")
            for key in _manifest(project, store)["items"]}
    assert set(puts) == made and set(puts.values()) == {1}


def _jobs(log: Path) -> list[Job]:
    """Jobs that note each attempt in `log` (the workers run on this host): good ones, a data error, a Skipped,
    a bug, and one that kills its worker every time."""

    def job(key: str, action: str) -> Job:
        def compute():
            with open(log, "a") as f:
                f.write(f"{key} {os.getpid()}\n")
            if action == "value-error":
                raise ValueError(f"image {key} cannot be read")
            if action == "skipped":
                return Skipped(f"{key}: the answer does not name it")
            if action == "bug":
                raise RuntimeError("a bug")
            if action == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            return {"key": key, "square": int(key[-1]) ** 2}

        return Job(key, f"fp-{key}", compute, {"action": action})

    return [job("good1", "ok"), job("bad-image", "value-error"), job("good2", "ok"), job("unnamed", "skipped"),
            job("buggy", "bug"), job("poison", "die"), job("good3", "ok")]


def _attempts(log: Path) -> Counter:
    return Counter(line.split()[0] for line in log.read_text().splitlines())


def test_a_data_error_is_skipped_once_and_an_item_that_kills_its_worker_fails_after_its_retries(ray_instance,
                                                                                                 tmp_path):
    log = tmp_path / "attempts.txt"
    log.touch()
    store = ItemStore(tmp_path / "store", "record")
    executors.configure(ComputeParams(executor="ray", ray={"workers": 2, "max_restarts": -1, "max_task_retries": 1}))
    try:
        manifest = run_jobs(store, _jobs(log), "unit")
        assert list(manifest["items"]) == ["good1", "good2", "good3"]  # job order
        assert [store.read(k, f"fp-{k}")["square"] for k in manifest["items"]] == [1, 4, 9]
        assert manifest["skipped"]["bad-image"]["reason"] == "ValueError: image bad-image cannot be read"
        assert manifest["skipped"]["unnamed"]["reason"] == "unnamed: the answer does not name it"
        assert manifest["failed"]["buggy"]["reason"] == "RuntimeError: a bug"
        assert "its Ray worker died while making it, 2 times" in manifest["failed"]["poison"]["reason"]
        # a data error is tried once; the poison item once and once more (max_task_retries: 1), then given up
        assert _attempts(log) == {"good1": 1, "good2": 1, "good3": 1, "bad-image": 1, "unnamed": 1, "buggy": 1,
                                  "poison": 2}

        # the next run: skips are stored under their fingerprint (not tried again), failures are tried again
        again = run_jobs(store, _jobs(log), "unit")
        assert list(again["items"]) == ["good1", "good2", "good3"]
        assert sorted(again["skipped"]) == ["bad-image", "unnamed"]
        assert _attempts(log) == {"good1": 1, "good2": 1, "good3": 1, "bad-image": 1, "unnamed": 1, "buggy": 2,
                                  "poison": 4}
        assert len({line.split()[1] for line in log.read_text().splitlines()}) >= 3  # restarted processes
    finally:
        executors.reset()
