"""Where the per-item jobs of ``run_jobs`` (at the end of this module) run: in the run's own process (``SequentialExecutor``, the
default) or on Ray workers (``RayExecutor``, ``compute.executor: ray``; docs/scale.md).

An executor only computes. It takes the jobs a node built and yields each job's ``Outcome`` (the value, a skip
with its reason, or a failure) as soon as it is ready; ``run_jobs`` then writes the item into the store and keeps
the manifest in the driver, exactly as for a sequential run. So fingerprints, the per-item resume and the outputs
do not depend on where an item was made.

Ray: one actor per worker makes one item at a time. A job is its ``compute`` closure, pickled with cloudpickle,
where

- the model adapter travels as its load spec (``io/model_dataset.py: ModelSpec``) and is loaded once per worker
  process;
- objects many jobs share (the ``CocoSplit``, the manifests) travel once per node through Ray's object store,
  not once per job;

and the value comes back to the driver. A worker killed mid-item is restarted (``max_restarts``) and the item
retried (``max_task_retries``), then recorded as failed (retried on the next run); an item that fails for a data
reason is recorded as skipped, never retried. The workers read the images and earlier items from the same paths as
the driver: the project folder on a shared filesystem, or an object store (``--env=s3``: the split, the item stores
and the manifests in a bucket, read through fsspec; then the workers need no folder of the driver's: docs/scale.md).

The executor in use is module state: ``hooks.ComputeHook`` configures it from ``params:compute`` before a run and
closes it after, so node signatures do not change.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from eagle_pipelines.console import progress_bar
from eagle_pipelines.io import model_dataset
from eagle_pipelines.io.items import DATA_ERRORS, ItemStore, Job, Manifest, Skipped
from eagle_pipelines.io.model_dataset import model_from_spec, model_reference
from eagle_pipelines.io.split_dataset import CocoSplit

logger = logging.getLogger(__name__)


# --- what a job gives back ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One job's result: ``made`` (with its value), ``skipped`` (a data reason: stored, not retried until the
    input changes) or ``failed`` (not stored: retried on the next run); where and in how long it was made."""

    status: Literal["made", "skipped", "failed"]
    value: Any = None
    reason: str = ""
    worker: int = 0
    pid: int = 0
    host: str = ""
    seconds: float = 0.0


def attempt(compute, worker: int = 0) -> Outcome:
    """Runs one job's `compute` the way ``run_jobs`` always has: ``Skipped`` or a data error (``ValueError``,
    ``OSError``) is a skip with its reason, any other error a failure."""
    start = time.perf_counter()
    where = {"worker": worker, "pid": os.getpid(), "host": socket.gethostname()}
    try:
        value = compute()
    except DATA_ERRORS as exc:
        value = Skipped(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one item's failure must not lose the others
        return Outcome("failed", reason=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start, **where)
    seconds = time.perf_counter() - start
    if isinstance(value, Skipped):
        return Outcome("skipped", reason=value.reason, seconds=seconds, **where)
    return Outcome("made", value=value, seconds=seconds, **where)


# --- executors ----------------------------------------------------------------------------------------------------
class SequentialExecutor:
    """Every job in this process, one after the other, in order."""

    name = "sequential"

    def run(self, jobs: Sequence[Job], description: str) -> Iterator[tuple[int, Outcome]]:
        for i, job in enumerate(jobs):
            yield i, attempt(job.compute)

    def close(self) -> None:
        pass


@dataclass
class _Slot:
    """One Ray worker as the driver sees it: its actor, and what it did in the current node."""

    actor: Any
    alive: bool = True
    pids: list[int] = field(default_factory=list)
    host: str = ""
    items: int = 0
    seconds: float = 0.0


class RayExecutor:
    """Jobs on Ray actors (``compute.ray``: address, workers, gpus_per_worker, cpus_per_worker, max_restarts,
    max_task_retries, runtime_env). Ray is started (or joined) at the first node that has items to make, and the
    same workers serve every node of the run, so each loads the model once."""

    name = "ray"

    def __init__(self, params):
        self.params = params
        self.slots: list[_Slot] = []
        self.start_seconds: float | None = None
        self.bytes_in = 0  # job and shared-object bytes sent to workers (this executor's lifetime)
        self.in_flight: dict[int, tuple[str, float]] = {}  # worker -> (item key, since when: time.monotonic())
        self.restarts: list[dict] = []  # every worker restart seen: worker, old pid, new pid
        self.retried: list[str] = []  # items made by a worker's new process after the one they were sent to died
        self.stats: list[dict] = []  # per node: items, wall seconds, bytes moved, per-worker items and seconds
        self._owns_ray = False
        self._lock = threading.RLock()

    # -- start and stop ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts or joins Ray and starts the workers (once); waits until every worker answers."""
        with self._lock:
            if self.slots:
                return
            try:
                import ray
            except ImportError:
                raise RuntimeError("compute.executor is 'ray' but Ray is not installed: pip install "
                                   "'eagle_pipelines[ray]' (or set compute.executor: sequential)") from None
            p = self.params
            begin = time.perf_counter()
            if not ray.is_initialized():
                # "local" starts a new instance; "auto" and an address join a running cluster
                try:
                    ray.init(address=p.address, runtime_env=p.runtime_env, include_dashboard=False,
                             log_to_driver=True, logging_level=logging.WARNING)
                except ConnectionError as exc:
                    raise RuntimeError(f"compute.ray.address is '{p.address}' but no Ray cluster answers there "
                                       f"({str(exc).strip().splitlines()[0][:200]}): start one (`ray start --head` "
                                       f"on this host; docs/scale.md) or set compute.ray.address: local") from None
                self._owns_ray = True
            resources = ray.cluster_resources()
            needed_gpus = p.workers * p.gpus_per_worker
            if needed_gpus > resources.get("GPU", 0):
                logger.warning("Ray: %d workers with %g GPUs each need %g GPUs; the cluster has %g now (the workers "
                               "wait for an autoscaler to add nodes)", p.workers, p.gpus_per_worker, needed_gpus,
                               resources.get("GPU", 0))
            # one item at a time per worker; "control" answers getpid/where while an item runs
            worker_class = ray.remote(concurrency_groups={"control": 1})(_Worker)
            for slot in range(p.workers):
                actor = worker_class.options(
                    num_cpus=p.cpus_per_worker, num_gpus=p.gpus_per_worker, max_restarts=p.max_restarts,
                    max_task_retries=p.max_task_retries, max_concurrency=1,
                ).remote(slot, os.getcwd() if p.driver_folder else "", p.cpus_per_worker, p.gpus_per_worker)
                self.slots.append(_Slot(actor))
            try:
                where = ray.get([s.actor.where.options(concurrency_group="control").remote() for s in self.slots],
                                timeout=600)
            except ray.exceptions.GetTimeoutError:
                self.close()
                raise RuntimeError(f"Ray: {p.workers} workers ({p.cpus_per_worker:g} CPUs and {p.gpus_per_worker:g} "
                                   f"GPUs each) did not start within 600 s; the cluster has "
                                   f"{ {k: v for k, v in resources.items() if k in ('CPU', 'GPU')} }: lower "
                                   f"compute.ray.workers or add nodes (docs/scale.md)") from None
            for slot, w in zip(self.slots, where):
                slot.pids.append(w["pid"])
                slot.host = w["host"]
            self.start_seconds = time.perf_counter() - begin
            logger.info("Ray: %d workers ready in %.1f s on %s (cluster: %s)", p.workers, self.start_seconds,
                        ", ".join(sorted({s.host for s in self.slots})),
                        ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU")))

    def close(self) -> None:
        """Stops the workers, and Ray itself when this executor started it."""
        with self._lock:
            try:
                import ray
            except ImportError:
                return
            if ray.is_initialized():
                for slot in self.slots:
                    try:
                        ray.kill(slot.actor, no_restart=True)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
                if self._owns_ray:
                    ray.shutdown()
            self.slots = []
            self._owns_ray = False

    def pids(self) -> list[int]:
        """The process id of every live worker now (asked through a channel that a running item does not
        block)."""
        import ray

        return ray.get([s.actor.getpid.options(concurrency_group="control").remote() for s in self.slots if s.alive])

    # -- running a node's jobs ---------------------------------------------------------------------------------
    def run(self, jobs: Sequence[Job], description: str) -> Iterator[tuple[int, Outcome]]:
        """Yields ``(index, outcome)`` of every job as the workers finish them (one item in flight per worker)."""
        with self._lock:
            self.start()
            yield from self._run(jobs, description)

    def _run(self, jobs: Sequence[Job], description: str) -> Iterator[tuple[int, Outcome]]:
        import ray

        run_id = uuid.uuid4().hex
        begin = time.perf_counter()
        packer = _Packer(run_id)
        blobs = [packer.pack(job, description) for job in jobs]
        shared_bytes = sum(size for _, _, size in packer.shared.values())
        job_bytes = sum(len(b) for b, _ in blobs)
        self.bytes_in += shared_bytes + job_bytes
        for slot in self.slots:
            slot.items, slot.seconds = 0, 0.0
        queue = deque(range(len(jobs)))
        pending: dict[Any, tuple[int, int, int]] = {}  # result -> (job, worker, its pid when sent)
        out_bytes = 0

        def submit(s: int) -> None:
            i = queue.popleft()
            blob, tokens = blobs[i]
            refs = {t: packer.shared[t][1] for t in tokens}
            pending[self.slots[s].actor.run.remote(run_id, blob, refs)] = (i, s, self.slots[s].pids[-1])
            self.in_flight[s] = (jobs[i].key, time.monotonic())

        def refill() -> None:
            for s, slot in enumerate(self.slots):
                if slot.alive and s not in self.in_flight and queue:
                    submit(s)

        self.in_flight.clear()
        refill()
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            i, s, sent_pid = pending.pop(ref)
            self.in_flight.pop(s, None)
            slot = self.slots[s]
            try:
                outcome, size = ray.get(ref)
                out_bytes += size
            except ray.exceptions.RayActorError as exc:
                outcome = Outcome("failed", worker=s, reason=(
                    f"its Ray worker died while making it, {self.params.max_task_retries + 1} times (killed, or out "
                    f"of memory: {type(exc).__name__}); retried on the next run"))
                slot.alive = self._alive(slot, description)
                if not slot.alive:
                    logger.error("%s: Ray worker %d is gone (it died more than compute.ray.max_restarts=%d times)",
                                 description, s, self.params.max_restarts)
            except Exception as exc:  # noqa: BLE001 - the item fails, the others finish
                outcome = Outcome("failed", worker=s, reason=f"{type(exc).__name__}: {exc}")
            if outcome.pid and outcome.pid not in slot.pids:
                self._restarted(s, outcome.pid, description)
            if outcome.pid and outcome.pid != sent_pid:
                self.retried.append(jobs[i].key)
                logger.warning("%s: item %s was made by worker %d's new process (pid %d) after the one it was sent "
                               "to (pid %d) died", description, jobs[i].key, s, outcome.pid, sent_pid)
            slot.items += 1
            slot.seconds += outcome.seconds
            refill()  # before the driver writes this item: the worker does not wait for it
            yield i, outcome
            if queue and not pending:
                reason = ("no Ray worker is left (each died more than compute.ray.max_restarts times); see the "
                          "worker logs under the Ray session folder (/tmp/ray/session_latest/logs)")
                while queue:
                    yield queue.popleft(), Outcome("failed", reason=reason)
        wall = time.perf_counter() - begin
        self.stats.append({"description": description, "items": len(jobs), "seconds": wall,
                           "shared_bytes": shared_bytes, "job_bytes": job_bytes, "out_bytes": out_bytes,
                           "workers": [{"items": o.items, "seconds": o.seconds} for o in self.slots]})
        self._log(description, len(jobs), wall, shared_bytes, job_bytes, out_bytes)

    def _alive(self, slot: _Slot, description: str) -> bool:
        import ray

        try:
            pid = ray.get(slot.actor.getpid.options(concurrency_group="control").remote(), timeout=300)
        except ray.exceptions.RayActorError:
            return False
        except ray.exceptions.GetTimeoutError:
            return True  # restarting slowly: its next item tells
        if pid not in slot.pids:
            self._restarted(self.slots.index(slot), pid, description)
        return True

    def _restarted(self, s: int, pid: int, description: str) -> None:
        slot = self.slots[s]
        self.restarts.append({"worker": s, "old_pid": slot.pids[-1], "new_pid": pid})
        logger.warning("%s: Ray worker %d was restarted (pid %d, before %d)", description, s, pid, slot.pids[-1])
        slot.pids.append(pid)

    def _log(self, description: str, n: int, wall: float, shared_bytes: int, job_bytes: int, out_bytes: int) -> None:
        if not n:
            return
        logger.info("%s: %d items on %d Ray workers in %.1f s (%.3f items/s); moved %.1f kB of shared inputs once, "
                    "%.1f kB per item in, %.1f kB per item out", description, n, len(self.slots), wall, n / wall,
                    shared_bytes / 1e3, job_bytes / n / 1e3, out_bytes / n / 1e3)
        for s, slot in enumerate(self.slots):
            rate = slot.items / slot.seconds if slot.seconds else 0.0
            logger.info("%s: worker %d (%s, pid %s): items %d, %.1f s busy, %.3f items/s%s", description, s,
                        slot.host, slot.pids[-1] if slot.pids else "?", slot.items, slot.seconds, rate,
                        f", restarted {len(slot.pids) - 1} times" if len(slot.pids) > 1 else "")


# --- shipping a job -----------------------------------------------------------------------------------------------
def _shared_types() -> dict[type, tuple[str, ...]]:
    """Types whose objects many jobs capture, sent once per node (subclasses too); each with the cache attributes
    it rebuilds itself (not sent). A model adapter that was not loaded by the catalog (no load spec) is sent whole,
    once per node."""
    from eagle_pipelines.models.adapter import TransformersAdapter

    return {CocoSplit: ("_index",), Manifest: (), TransformersAdapter: ()}


def _rebuild(cls: type, state: dict):
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


#: in a worker: token -> shared object of the current node (filled before a job is unpickled)
_WORKER_SHARED: dict[str, Any] = {}


def _shared_object(token: str):
    try:
        return _WORKER_SHARED[token]
    except KeyError:
        raise RuntimeError(f"shared object {token} was not sent with the job") from None


class _Packer:
    """Pickles jobs for the workers: models by reference, shared objects once into Ray's object store."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.types = _shared_types()
        self._caches: dict[type, tuple[str, ...] | None] = {}  # per concrete type: its entry in `types`, or None
        self.shared: dict[str, tuple[Any, Any, int]] = {}  # token -> (object, ObjectRef, bytes)
        self._tokens: dict[int, str] = {}

    def caches(self, cls: type) -> tuple[str, ...] | None:
        if cls not in self._caches:
            self._caches[cls] = next((c for base, c in self.types.items() if issubclass(cls, base)), None)
        return self._caches[cls]

    def pack(self, job: Job, description: str) -> tuple[bytes, tuple[str, ...]]:
        """The job's bytes and the tokens of the shared objects it needs."""
        used: set[str] = set()
        try:
            return self._dumps(job.compute, used, root=None), tuple(sorted(used))
        except Exception as exc:  # noqa: BLE001 - named with the fix
            raise RuntimeError(f"{description}: item {job.key} cannot be sent to a Ray worker ({type(exc).__name__}: "
                               f"{exc}); run it with compute.executor: sequential") from exc

    def _dumps(self, obj, used: set[str], root) -> bytes:
        from ray import cloudpickle

        packer = self

        class JobPickler(cloudpickle.Pickler):
            def reducer_override(self, value):
                spec = model_reference(value)
                if spec is not None:
                    return model_from_spec, (spec,)
                caches = packer.caches(type(value))
                if caches is not None:
                    if value is root:
                        state = {k: (None if k in caches else v) for k, v in vars(value).items()}
                        return _rebuild, (type(value), state)
                    used.add(packer._share(value))
                    return _shared_object, (packer._tokens[id(value)],)
                return super().reducer_override(value)

        buf = io.BytesIO()
        JobPickler(buf, protocol=5).dump(obj)
        return buf.getvalue()

    def _share(self, value) -> str:
        import ray

        token = self._tokens.get(id(value))
        if token is None:
            token = f"{type(value).__name__}-{uuid.uuid4().hex[:12]}"
            blob = self._dumps(value, set(), root=value)
            self.shared[token] = (value, ray.put(blob), len(blob))  # the object is held: its id stays unique
            self._tokens[id(value)] = token
        return token


# --- the worker ---------------------------------------------------------------------------------------------------
class _Worker:
    """A Ray actor: makes one item at a time. Wrapped by ``ray.remote`` when Ray starts."""

    def __init__(self, slot: int, workdir: str, threads: float, gpus: float):
        self.slot = slot
        self.run_id: str | None = None
        self.threads = max(1, int(threads))
        if workdir and os.path.isdir(workdir):  # compute.ray.driver_folder (default): relative paths of the
            os.chdir(workdir)  # catalog resolve as in the driver
        if gpus > 0:
            model_dataset.WORKER_DEVICE = "cuda"  # Ray shows this worker only its own GPUs
        logging.basicConfig(level=logging.WARNING)

    def getpid(self) -> int:
        return os.getpid()

    def where(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname()}

    def run(self, run_id: str, blob: bytes, shared: dict[str, Any]) -> tuple[Outcome, int]:
        """One job: its outcome and the size of what goes back (bytes)."""
        import pickle

        import ray
        from ray import cloudpickle

        if run_id != self.run_id:  # a new node: forget the previous one's shared objects
            _WORKER_SHARED.clear()
            self.run_id = run_id
        begin = time.perf_counter()
        where = {"worker": self.slot, "pid": os.getpid(), "host": socket.gethostname()}
        try:
            for token, ref in shared.items():
                if token not in _WORKER_SHARED:
                    _WORKER_SHARED[token] = cloudpickle.loads(ray.get(ref))
            compute = cloudpickle.loads(blob)
        except Exception as exc:  # noqa: BLE001 - e.g. the model folder is not on this host
            return Outcome("failed", reason=f"{type(exc).__name__}: {exc}", **where), 0
        torch = sys.modules.get("torch")  # imported by the job's model: as many threads as reserved CPUs
        if torch is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        outcome = attempt(compute, self.slot)
        outcome.seconds = time.perf_counter() - begin  # busy time: unpacking (the model, at first) included
        try:
            size = len(pickle.dumps(outcome, protocol=5))
        except Exception as exc:  # noqa: BLE001 - a value that cannot travel
            return Outcome("failed", reason=f"the value cannot be sent back ({type(exc).__name__}: {exc})",
                           **where), 0
        return outcome, size


# --- the executor of the current run ------------------------------------------------------------------------------
_STATE: dict[str, Any] = {"params": None, "executor": None}
_STATE_LOCK = threading.Lock()


def configure(params) -> None:
    """Sets where the next jobs run (a ``ComputeParams``, or None for sequential); closes the previous executor."""
    close()
    with _STATE_LOCK:
        _STATE["params"] = params


def current():
    """The executor of the current run (built on first use; Ray itself starts at the first item to make)."""
    with _STATE_LOCK:
        if _STATE["executor"] is None:
            params = _STATE["params"]
            if params is None or params.executor == "sequential":
                _STATE["executor"] = SequentialExecutor()
            else:
                _STATE["executor"] = RayExecutor(params.ray)
        return _STATE["executor"]


def active():
    """The executor the current run has built so far, or None (for monitoring: builds nothing)."""
    return _STATE["executor"]


def close() -> None:
    """Stops the current executor's workers (Ray, when this run started it); the next run builds its own."""
    with _STATE_LOCK:
        executor, _STATE["executor"] = _STATE["executor"], None
    if executor is not None:
        executor.close()


def reset() -> None:
    """Back to sequential (after a run)."""
    close()
    with _STATE_LOCK:
        _STATE["params"] = None


# --- running the jobs of a node -----------------------------------------------------------------------------------
def run_jobs(store: ItemStore, jobs: Iterable[Job], description: str, params: dict | None = None) -> dict:
    """Makes every job's item that the store does not hold yet (each written as soon as it is ready), and returns
    the manifest of all of them.

    A job that returns ``Skipped`` or raises a data error (``ValueError``, ``OSError``) is recorded as skipped
    with its reason (stored under its fingerprint, so it is retried when its input changes); any other error is
    recorded as failed (not stored: retried on the next run) and the rest still finish.

    Where the jobs are computed is the run's executor (this module: in this process, one at a time, or on
    Ray workers; ``params:compute``). The store is written here, in this process, and the manifest lists the items
    in job order, so the outputs do not depend on the executor."""
    jobs = list(jobs)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{description}: the same item key is made twice ({dup[:3]}); keys must be unique")
    manifest = {"store": str(store.path), "kind": store.kind, "params": params or {}, "items": {}, "skipped": {},
                "failed": {}}
    todo = []
    for job in jobs:
        reason = store.skipped(job.key, job.fp)
        if reason is not None:
            manifest["skipped"][job.key] = {"fp": job.fp, "reason": reason, **job.info}
        elif store.get(job.key, job.fp) is not None:
            manifest["items"][job.key] = {"fp": job.fp, **job.info}
        else:
            todo.append(job)
    if len(todo) < len(jobs):
        logger.info("%s: %d of %d items already made for these inputs, making %d", description,
                    len(jobs) - len(todo), len(jobs), len(todo))
    start = time.perf_counter()
    done: dict[int, tuple[str, dict]] = {}  # todo index -> (manifest section, entry)
    if todo:
        with progress_bar(total=len(todo), desc=description, unit="item") as bar:
            for i, outcome in current().run(todo, description):
                if i in done:  # an executor must give each job one outcome
                    raise RuntimeError(f"{description}: item {todo[i].key} came back twice from the executor")
                done[i] = _record(store, todo[i], outcome, description)
                bar.update(1)
    for i, job in enumerate(todo):  # job order, as a sequential run inserts them
        section, entry = done.get(i, ("failed", {"fp": job.fp, "reason": "the executor gave no result", **job.info}))
        manifest[section][job.key] = entry
    manifest["seconds"] = round(time.perf_counter() - start, 3)
    if manifest["failed"]:
        logger.error("%s: %d items failed (listed in the report; they are retried on the next run): %s",
                     description, len(manifest["failed"]), ", ".join(sorted(manifest["failed"])[:10]))
    return manifest


def _record(store: ItemStore, job: Job, outcome, description: str) -> tuple[str, dict]:
    """Writes one job's outcome into the store (an item, or a skip with its reason; a failure writes nothing) and
    returns its manifest section and entry."""
    if outcome.status == "failed":
        logger.error("%s: item %s failed: %s", description, job.key, outcome.reason)
        return "failed", {"fp": job.fp, "reason": outcome.reason, **job.info}
    if outcome.status == "skipped":
        logger.warning("%s: %s skipped: %s", description, job.key, outcome.reason)
        store.skip(job.key, job.fp, outcome.reason)
        return "skipped", {"fp": job.fp, "reason": outcome.reason, **job.info}
    store.put(job.key, job.fp, outcome.value)
    return "items", {"fp": job.fp, **job.info}


@dataclass
class PendingItems:
    """What a producer node returns: the jobs of its items, the progress `description` and the `params` its
    manifest records. Saving it into its manifest's dataset runs it (``run``) into the store that dataset names,
    inside `context` when given (e.g. the node's torch thread count)."""

    jobs: list[Job]
    description: str
    params: dict = field(default_factory=dict)
    context: Callable[[], contextlib.AbstractContextManager] | None = None
    #: called with the store before the jobs run (jobs that share work need to know what the store holds)
    prepare: Callable[[ItemStore], None] | None = None
    #: called after the jobs ran (e.g. to log what they shared)
    finish: Callable[[], None] | None = None

    def run(self, store: ItemStore) -> dict:
        """Makes every item `store` lacks and returns the manifest (``run_jobs``)."""
        if self.prepare is not None:
            self.prepare(store)
        with self.context() if self.context is not None else contextlib.nullcontext():
            manifest = run_jobs(store, self.jobs, self.description, self.params)
        if self.finish is not None:
            self.finish()
        return manifest
