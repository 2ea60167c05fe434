"""Provenance stamps: Kedro's rerun tools see a dataset made under other parameters or from other inputs as
missing.

Every dataset a pipeline produces gets a *stamp*: a hash of its producer node, the stamps of all the node's
inputs (recursively: parameters by value, the datasets you supply by their files' size and time, the model
checkpoint by its content fingerprint) and the dataset's own catalog entry. After a save, the stamp is recorded in
``data/.provenance/<dataset>.json``; before a save, the old record is removed, so a file half-written by a killed
run never passes for finished.

- ``ProvenanceCatalog.exists`` (settings.DATA_CATALOG_CLASS) is True only where the file exists *and* its record
  matches the stamp the current parameters and inputs give. So ``kedro run --only-missing-outputs`` after a
  parameter change reruns exactly the nodes whose outputs that change reaches, and nothing else.
- ``--from-nodes`` / ``--to-nodes`` / ``--node-names``: a run whose inputs are made by nodes it does not run stops
  before any node when one of them is missing or was made under other parameters, naming it and the command
  that makes it, instead of mixing old and new results.
- One writer per data folder: a second ``kedro run`` on the same project stops at once with a clear message
  (``data/.eagle.lock``), instead of rewriting the files the first one is reading.

With a ``run_state`` catalog entry (``io/storage.py: RunStateDataset``, ``path: s3://bucket/.eagle``) the records
and the lock live on that fsspec filesystem instead (``conf/s3``): each record is one PUT, removed before its
dataset is saved and written after; the lock is an object created only if absent (``If-None-Match: *``). A dataset
on an object store is stamped by its objects' names, sizes and ETags, as a local one by its files' sizes and times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

from eagle_pipelines.errors import UserError
from eagle_pipelines.files import atomic_write

logger = logging.getLogger(__name__)
RECORDS = Path("data") / ".provenance"
LOCK = Path("data") / ".eagle.lock"


class StaleInputError(UserError, DatasetError):
    """A run's input that another node makes is missing or was made under other parameters or inputs."""


class ProjectLockedError(UserError, RuntimeError):
    """Another run is writing this project's data folder."""


class DataFolderError(UserError, OSError):
    """The data folder cannot take the run's lock file (read-only, or not a folder)."""


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _describe(dataset) -> dict:
    try:
        return dataset._describe()
    except Exception:  # noqa: BLE001 - a dataset that cannot describe itself is identified by its type
        return {}


def _remote_stats(fs, root: str, limit: int = 20000) -> list:
    """(relative name, size, ETag or modification time) of the object `root` of an fsspec filesystem, or of the
    objects under it (at most `limit`): an object replaced in the bucket changes the stamp, as a local file's size
    and time do."""
    try:
        root = fs._strip_protocol(root).rstrip("/")
        fs.invalidate_cache()
        found = fs.find(root, detail=True)
    except Exception:  # noqa: BLE001 - an unreachable store: stamped by its path (the run then fails on reading)
        return [root]
    if not found:
        return ["absent"]

    def version(info: dict) -> str:
        return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or "")

    return [[name[len(root):].lstrip("/") or PurePosixPath(name).name, info.get("size"), version(info)]
            for name, info in sorted(found.items())[:limit]]


def _remote_of(dataset, described: dict, path) -> tuple[Any, str] | None:
    """(fsspec filesystem, path) of a dataset whose data is not on the local filesystem, or None: ours
    (an ``s3://`` path and storage options) and Kedro's (``_fs`` and ``protocol``)."""
    protocol = described.get("protocol")
    fs = getattr(dataset, "_fs", None)
    if fs is not None and protocol and protocol not in ("file", "local") and path:
        return fs, str(path)
    if path and "://" in str(path) and not str(path).startswith("file://"):
        from eagle_pipelines.io import storage

        remote = storage.Remote(str(path), getattr(dataset, "_options", None))
        try:
            return remote.fs, remote.url
        except storage.StorageError:
            return None
    return None


def _file_stats(path: str | None, limit: int = 20000) -> list:
    """(relative path, size, mtime) of a local file, or of the files under a local folder (at most `limit`)."""
    if not path or "://" in str(path):
        return [str(path)]
    root = Path(path)
    if root.is_file():
        st = root.stat()
        return [[root.name, st.st_size, st.st_mtime_ns]]
    if not root.is_dir():
        return ["absent"]
    stats = []
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            file = Path(dirpath) / name
            try:
                st = file.stat()
            except OSError:
                continue
            stats.append([file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
            if len(stats) >= limit:
                return sorted(stats)
    return sorted(stats)


def source_stamp(name: str, dataset) -> str:
    """The stamp of a dataset no node of the pipeline makes: its own ``stamp()`` when it has one (a model
    checkpoint: its content fingerprint), else its catalog entry and its files' sizes and times."""
    if dataset is None:
        return _hash("absent", name)
    if hasattr(dataset, "stamp"):
        return _hash(type(dataset).__name__, dataset.stamp())
    described = _describe(dataset)
    path = described.get("filepath") or described.get("path")
    remote = _remote_of(dataset, described, path)
    if remote is not None:
        return _hash(type(dataset).__name__, described, _remote_stats(*remote))
    return _hash(type(dataset).__name__, described, _file_stats(path))


def _node_identity(node) -> list:
    func = node.func
    keywords = getattr(func, "keywords", None)
    inner = getattr(func, "func", func)
    return [node.name, getattr(inner, "__module__", ""), getattr(inner, "__qualname__", str(inner)),
            keywords or {}]


def expected_stamps(pipeline, catalog) -> dict[str, str]:
    """Dataset name -> the stamp its file must carry to be current, for every dataset of `pipeline`."""
    stamps: dict[str, str] = {}
    produced = pipeline.all_outputs()
    for name in pipeline.inputs():
        if name.startswith("params:") or name == "parameters":
            value = catalog.load(name)
            stamps[name] = _hash("params", value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
        else:
            stamps[name] = source_stamp(name, catalog.get(name))
    for node in pipeline.nodes:  # topological order
        node_stamp = _hash(_node_identity(node), [stamps[i] for i in node.inputs])
        for out in node.outputs:
            stamps[out] = _hash(node_stamp, out, _describe(catalog.get(out)) if out in catalog else {})
    return {name: stamp for name, stamp in stamps.items() if name in produced or name.startswith("params:")
            or name in pipeline.inputs()}


class Provenance:
    """The stamps a run expects and the records of what is on disk (``data/.provenance/`` of the project, or
    ``<run_state>/provenance/`` on any fsspec filesystem: ``storage.RunStateDataset``)."""

    def __init__(self, root: Path, expected: dict[str, str], state=None):
        from eagle_pipelines.io import storage

        self.root = root
        self.expected = expected
        #: records on an object store: one PUT each (read, written and removed through io/storage.py)
        self.remote = storage.Remote(f"{state.path}/provenance", state.options) if state is not None else None

    @staticmethod
    def _name(name: str) -> str:
        return name.replace("/", "_").replace(":", "_") + ".json"

    def _record(self, name: str) -> Path:
        return self.root / RECORDS / self._name(name)

    def recorded(self, name: str) -> str | None:
        try:
            if self.remote:
                return json.loads(self.remote.read(self._name(name)))["stamp"]
            return json.loads(self._record(name).read_text())["stamp"]
        except (OSError, ValueError, KeyError):
            return None

    def current(self, name: str) -> bool:
        """Whether the dataset on disk was made from this run's parameters and inputs (True for datasets this
        run does not stamp: the sources you supply)."""
        if name not in self.expected or name.startswith("params:"):
            return True
        return self.recorded(name) == self.expected[name]

    def forget(self, name: str) -> None:
        if self.remote:
            self.remote.remove(self._name(name))
            return
        self._record(name).unlink(missing_ok=True)

    def record(self, name: str) -> None:
        if name not in self.expected:
            return

        text = json.dumps({"dataset": name, "stamp": self.expected[name]}).encode()
        if self.remote:
            self.remote.write(self._name(name), text)
            return
        atomic_write(self._record(name), lambda f: f.write(text))


class RemoteLock:
    """One writer per data folder on an object store: the object ``<run_state>/eagle.lock``, created by a PUT that
    only creates (``If-None-Match: *``) and holding its owner (host, pid, time, a token). A lock left by a run
    killed on this host (its pid is gone) is taken over; one from another host is named with how to remove it."""

    NAME = "eagle.lock"

    def __init__(self, state):
        import socket
        import uuid

        from eagle_pipelines.io import storage

        self.remote = storage.Remote(state.path, state.options)
        self.url = f"{state.path}/{self.NAME}"
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}

    def acquire(self) -> None:
        import datetime

        owner = {**self.owner, "started": datetime.datetime.now().isoformat(timespec="seconds")}
        for _ in range(2):
            if self.remote.create(self.NAME, json.dumps(owner).encode()):
                return
            holder = self._holder()
            if holder is None:
                continue  # released meanwhile
            mine = holder.get("pid") == os.getpid()  # this process runs one pipeline at a time: a leftover
            if holder.get("host") == self.owner["host"] and (mine or not _alive(holder.get("pid"))):
                logger.warning("the run lock %s was left by a run that is gone (pid %s on this host, started %s); "
                               "taking it over", self.url, holder.get("pid"), holder.get("started"))
                self.remote.remove(self.NAME)
                continue
            raise ProjectLockedError(
                f"another kedro run is writing this project's data (pid {holder.get('pid')} on "
                f"{holder.get('host')}, started {holder.get('started')}); wait for it to finish (one run per data "
                f"folder: {self.url}; if no such run is going, remove that object)")
        raise ProjectLockedError(f"the run lock {self.url} could not be taken; run again")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.remote.read(self.NAME))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def release(self) -> None:
        """Removes the lock if it is still this run's. A store that cannot be reached leaves it (the next run on
        this host takes it over) and never hides the run's own error."""
        from eagle_pipelines.io.storage import StorageError

        try:
            holder = self._holder()
            if holder is not None and holder.get("token") == self.owner["token"]:
                self.remote.remove(self.NAME)
        except StorageError as exc:
            logger.warning("the run lock %s could not be removed (%s); the next run on this host takes it over",
                           self.url, exc)


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class ProvenanceCatalog(DataCatalog):
    """Kedro's DataCatalog whose ``exists`` also asks whether the data is current (see the module docstring)."""

    provenance: Provenance | None = None

    def exists(self, ds_name: str) -> bool:
        if not super().exists(ds_name):
            return False
        if self.provenance is None:
            return True
        return self.provenance.current(ds_name)


def _registered(run_params: dict):
    from kedro.framework.project import pipelines

    names = run_params.get("pipeline_names") or ["__default__"]
    full = None
    for name in names:
        full = pipelines[name] if full is None else full + pipelines[name]
    return full


def _dotlist(tree: dict, prefix: str = "") -> list[str]:
    """``{"a": {"b": 1}}`` -> ``["a.b=1"]``: --params as the user gave them (values in YAML flow style)."""
    out = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += _dotlist(value, f"{name}.")
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            out.append(f"{name}={text}")
    return out


def _command(run_params: dict, outputs: list[str]) -> str:
    """The command that makes `outputs` under this run's pipeline, environment and --params (without them the
    hint would rebuild under the defaults, and the run would still find its inputs stale)."""
    import shlex

    names = run_params.get("pipeline_names") or ["__default__"]
    pipeline = "" if names == ["__default__"] else f" --pipeline={names[0]}"
    env = f" --env={run_params['env']}" if run_params.get("env") else ""
    params = _dotlist(run_params.get("runtime_params") or {})
    given = f" --params={shlex.quote(','.join(params))}" if params else ""
    return f"kedro run{pipeline}{env}{given} --to-outputs={','.join(outputs)}"


class ProvenanceHook:
    """Stamps outputs, makes ``exists`` stamp-aware, refuses stale inputs of partial runs, and holds the lock."""

    def __init__(self):
        self._root = Path.cwd()
        self._provenance: Provenance | None = None
        self._lock = None
        self._state = None  # storage.RunStateDataset: records and lock on any fsspec filesystem

    @hook_impl
    def after_context_created(self, context) -> None:
        self._root = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        from eagle_pipelines.io.storage import RunStateDataset

        state = catalog.get("run_state") if "run_state" in catalog else None
        self._state = state if isinstance(state, RunStateDataset) else None
        self._acquire()
        try:
            full = _registered(run_params)
            whole = full + pipeline if full is not None else pipeline
            expected = expected_stamps(whole, catalog)
            self._provenance = Provenance(self._root, expected, self._state)
            if isinstance(catalog, ProvenanceCatalog):
                catalog.provenance = self._provenance
            made_elsewhere = sorted((pipeline.inputs() & whole.all_outputs()) - {n for n in pipeline.inputs()
                                                                                  if n.startswith("params:")})
            stale = []
            for name in made_elsewhere:
                dataset = catalog.get(name)
                if dataset is None or not dataset.exists():
                    changed = dataset.changed_files() if hasattr(dataset, "changed_files") else []
                    stale.append((name, "it is missing" if not changed or changed == ["split.json"] else
                                  f"its files changed since it was made ({', '.join(changed[:3])}"
                                  f"{' ...' if len(changed) > 3 else ''})"))
                elif not self._provenance.current(name):
                    stale.append((name, "it was made under other parameters or from other inputs than this run's"))
            if stale:
                lines = "\n".join(f"  - '{n}': {why}" for n, why in stale)
                raise StaleInputError(
                    f"This run reads data that a node outside it makes, and that data is not current "
                    f"(nothing was run):\n{lines}\nMake it first: {_command(run_params, [n for n, _ in stale])}"
                    f" (or rerun with --only-missing-outputs, which makes exactly what is missing).")
        except BaseException:
            self._release()
            raise

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data, node) -> None:
        if self._provenance is not None:
            self._provenance.forget(dataset_name)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        if self._provenance is not None:
            self._provenance.record(dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._release()

    def _acquire(self) -> None:
        if self._state is not None:
            lock = RemoteLock(self._state)
            lock.acquire()
            self._lock = lock
            return
        from filelock import FileLock, Timeout

        path = self._root / LOCK
        lock = FileLock(str(path), timeout=0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            holder = ""
            info = path.with_suffix(".owner")
            if info.is_file():
                holder = f" ({info.read_text().strip()})"
            raise ProjectLockedError(
                f"another kedro run is writing this project's data folder{holder}; wait for it to finish "
                f"(one run per data folder: {path})") from None
        except OSError as exc:  # a read-only data/ (after Timeout: it is a TimeoutError, an OSError)
            raise DataFolderError(
                f"the data folder '{path.parent}' cannot take this run's lock file '{path.name}' "
                f"({exc.strerror or exc}); a run writes its results there: make it writable (chmod -R u+w "
                f"{path.parent}) or run from a writable copy of the project") from None
        import datetime

        try:
            path.with_suffix(".owner").write_text(
                f"pid {os.getpid()}, started {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        except OSError as exc:
            lock.release()
            raise DataFolderError(f"the data folder '{path.parent}' is not writable ({exc.strerror or exc}); a "
                                  f"run writes its results there: make it writable (chmod -R u+w {path.parent}) "
                                  f"or run from a writable copy of the project") from None
        self._lock = lock

    def _release(self) -> None:
        if isinstance(self._lock, RemoteLock):
            self._lock.release()
            self._lock = None
        if self._lock is not None:
            (self._root / LOCK).with_suffix(".owner").unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
