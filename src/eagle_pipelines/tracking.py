"""Experiment tracking with kedro-mlflow: every published report becomes one mlflow run (docs/tracking.md).

``TrackingHook`` does two things:

- It takes kedro-mlflow's place in the hook manager (pluggy loads a plugin's entry point only when no hook of that
  name is registered, and kedro-mlflow registers its hook as ``mlflow_hook``) and runs kedro-mlflow's setup itself:
  ``conf/<env>/mlflow.yml`` is read and validated, the tracking URI (``mlruns/`` under the project, mlflow's file
  store) and the experiment are set, and ``context.mlflow`` holds the configuration (``kedro mlflow ui`` reads
  it). A store that cannot be used (unwritable, not a folder, mlflow missing) is a warning, never a failed run.
- After a ``PublishedReportDataset`` (``<namespace>.report``) is saved, the report ``latest`` points at is logged
  as one mlflow run, unless a finished run of that history entry is already on record (a rerun that publishes
  nothing new adds no run; a report published while the store was unusable is logged by the next run that saves
  it): the parameters of every stage (``run.json`` "params", flattened to dotted keys), one metric per
  method/level/protocol/column of ``metrics.csv`` (``eagle.sentence.pixels.insertion_auc``), the coverage counts,
  the run facts as tags, and the history entry's files (report.html, tables, figures, run.json) as artifacts.

mlflow's own telemetry is turned off (``MLFLOW_DISABLE_TELEMETRY``) and its file store allowed
(``MLFLOW_ALLOW_FILE_STORE``) unless the environment says otherwise; nothing here reaches the network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

import pandas as pd
from kedro.framework.hooks import hook_impl

from eagle_pipelines.compare import flatten, show
from eagle_pipelines.io.report_dataset import PublishedReportDataset

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlruns/ is mlflow's file store (docs/tracking.md)
if "mlflow" in sys.modules:  # imported earlier (kedro-mlflow's CLI): drop the telemetry client it may have made
    with contextlib.suppress(Exception):  # telemetry internals vary between mlflow versions
        from mlflow.telemetry.client import set_telemetry_client

        set_telemetry_client()

logger = logging.getLogger(__name__)

#: tags that identify the history entry an mlflow run records
HISTORY_TAG = "eagle.history"
NAMESPACE_TAG = "eagle.namespace"
KEYS = ("method", "level", "protocol")
_INVALID = re.compile(r"[^/\w.\- :]")
MAX_KEY = 250


def _key(name: str) -> str:
    """An mlflow-valid param / metric / tag name."""
    return _INVALID.sub("_", name)[:MAX_KEY]


def report_params(run: dict) -> dict[str, str]:
    """The flattened parameters of a ``run.json`` as mlflow params (``superpixels.n_segments``: ``"6"``)."""
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    out = {}
    for key, value in flatten(run.get("params") or {}).items():
        text = show(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            logger.warning("parameter '%s' is %d characters long; mlflow keeps the first %d", key, len(text),
                           MAX_PARAM_VAL_LENGTH)
            text = text[:MAX_PARAM_VAL_LENGTH]
        out[_key(key)] = text
    return out


def report_metrics(metrics: pd.DataFrame, run: dict) -> dict[str, float]:
    """One metric per row and numeric column of ``metrics.csv``, named ``<method>.<level>.<protocol>.<column>``
    (the key columns present, in that order), plus the coverage counts (``coverage.n_targets.sentence``,
    ``coverage.not_made``). Missing values (NaN) are left out: mlflow has no "not measured"."""
    keys = [k for k in KEYS if k in metrics.columns]
    keys += [c for c in metrics.columns if c not in keys and not pd.api.types.is_numeric_dtype(metrics[c])]
    values = [c for c in metrics.columns if c not in keys]
    out = {}
    for row in metrics.to_dict("records"):
        prefix = ".".join(str(row[k]) for k in keys)
        for column in values:
            value = row[column]
            if value is not None and not isinstance(value, bool) and math.isfinite(float(value)):
                out[_key(f"{prefix}.{column}" if prefix else column)] = float(value)
    coverage = run.get("coverage") or {}
    for level, n in (coverage.get("n_targets") or {}).items():
        out[_key(f"coverage.n_targets.{level}")] = float(n)
    if "not_made" in coverage:
        out["coverage.not_made"] = float(len(coverage["not_made"]))
    return out


def report_tags(run: dict, namespace: str, stamp: str) -> dict[str, str]:
    """The run facts of ``run.json`` (everything but params and coverage) as tags, with the history entry."""
    tags = {NAMESPACE_TAG: namespace, HISTORY_TAG: stamp, "mlflow.runName": f"{namespace} {stamp}"}
    for key, value in run.items():
        if key not in ("params", "coverage"):
            tags["eagle.run." + re.sub(r"[^\w.\-/]+", "_", key).strip("_")] = show(value)[:5000]
    commit = run.get("git commit")
    if commit and re.fullmatch(r"[0-9a-f]{7,40}", str(commit)):
        tags["mlflow.source.git.commit"] = str(commit)
    return tags


def latest_entry(report_dir: Path) -> Path | None:
    """The history entry ``<report_dir>/latest`` points at, or None when nothing is published."""
    link = report_dir / "latest"
    if not link.is_symlink() or not (link / "run.json").is_file():
        return None
    return report_dir / "history" / Path(os.readlink(link)).name


def tracked_run(client, experiment_id: str, namespace: str, stamp: str):
    """The finished mlflow run that records history entry `stamp` of `namespace`, or None."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{HISTORY_TAG}` = '{stamp}' and "
                                                              f"tags.`{NAMESPACE_TAG}` = '{namespace}' and "
                                                              f"attributes.status = 'FINISHED'", max_results=1)
    return runs[0] if runs else None


def log_report(client, experiment_id: str, report_dir: Path, namespace: str, extra_tags: dict | None = None,
               parent_run_id: str | None = None, started_ms: int | None = None) -> str | None:
    """Logs the latest history entry of `report_dir` as one mlflow run; returns its id, or None when there is no
    published report or a finished run of that entry is already on record. The run spans `started_ms` (the start
    of the kedro run, ms since the epoch) to the entry's publication; its artifacts are the entry's files, hard
    linked where the store is local (``store_artifacts``). A run that fails halfway is deleted
    (so that the next call logs the entry again) and the error raised."""
    from mlflow.entities import Metric, Param

    entry = latest_entry(report_dir)
    if entry is None:
        return None
    stamp = entry.name
    if tracked_run(client, experiment_id, namespace, stamp) is not None:
        logger.info("mlflow: %s report %s is already on record", namespace, stamp)
        return None
    run = json.loads((entry / "run.json").read_text())
    metrics = pd.read_csv(entry / "metrics.csv") if (entry / "metrics.csv").is_file() else pd.DataFrame()
    tags = {**(extra_tags or {}), **report_tags(run, namespace, stamp)}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    published = _stamp_ms(stamp)
    # the run's real span: from the start of the kedro run that published the entry to its publication; an entry
    # published by an earlier run (logged now because the store was unusable then) has no known start
    start = started_ms if started_ms is not None and started_ms <= published else published
    created = client.create_run(experiment_id, start_time=start, tags=tags, run_name=tags["mlflow.runName"])
    run_id = created.info.run_id
    try:
        client.log_batch(run_id, params=[Param(k, v) for k, v in report_params(run).items()])
        client.log_batch(run_id, metrics=[Metric(k, v, published, 0) for k, v in report_metrics(metrics, run).items()])
        store_artifacts(client, run_id, entry)
    except BaseException:
        with contextlib.suppress(Exception):  # the store is failing already: the first error is the one to see
            client.delete_run(run_id)
        raise
    client.set_terminated(run_id, "FINISHED", end_time=published)
    return run_id


def _local_folder(uri: str) -> Path | None:
    """The folder of a local artifact URI (``file:///...`` or a plain path), or None for a remote store."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # a path (C:\ on Windows)
        return Path(uri)
    return None


def store_artifacts(client, run_id: str, entry: Path) -> str:
    """The history entry's files as the run's artifacts, stored once: hard links into a local artifact folder
    (mlruns/, on the same disk as data/: the report's bytes are not copied; mlflow serves no symbolic link that
    leaves its folder), else (a remote store, another disk) uploaded by mlflow. Returns ``"linked"`` or
    ``"copied"``. History entries are never edited in place (a new report is a new entry), so the links stay
    equal to the report."""
    folder = _local_folder(client.get_run(run_id).info.artifact_uri)
    if folder is not None:
        made: list[Path] = []
        try:
            for file in sorted(p for p in entry.rglob("*") if p.is_file()):
                target = folder / file.relative_to(entry)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(file, target)
                made.append(target)
            return "linked"
        except OSError as error:  # another file system, or links not allowed: mlflow copies them
            logger.info("mlflow: the report's files are copied into the store (no hard link: %s)", error)
            for target in made:
                target.unlink(missing_ok=True)
    client.log_artifacts(run_id, str(entry))
    return "copied"


#: mlflow 3's experiment kind: its UI opens an experiment of this kind on the runs table, not the GenAI traces page
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def mark_experiment_kind(client, experiment_id: str) -> bool:
    """Tags the experiment as a model-development one (``EXPERIMENT_KIND``) unless it has a kind; True if tagged."""
    key, value = EXPERIMENT_KIND
    if key in (client.get_experiment(experiment_id).tags or {}):
        return False
    client.set_experiment_tag(experiment_id, key, value)
    return True


def _stamp_ms(stamp: str) -> int:
    """The publication time of a history entry (``2026-11-22T02.50.02.016000Z``) in ms since the epoch."""
    try:
        when = dt.datetime.strptime(stamp, "%Y-%m-%dT%H.%M.%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        when = dt.datetime.now(dt.UTC)
    return int(when.timestamp() * 1000)


class TrackingHook:
    """Logs every published report to mlflow through kedro-mlflow's configuration (see the module docstring)."""

    #: pluggy's name for this hook: kedro-mlflow's entry point is not loaded beside it (it would open an mlflow
    #: run per ``kedro run`` and fail the run when the store cannot be written)
    PLUGIN_NAME = "mlflow_hook"

    def __init__(self):
        self.__name__ = self.PLUGIN_NAME
        self._config = None  # kedro-mlflow's KedroMlflowConfig once set up
        self._catalog = None
        self._tags: dict[str, str] = {}
        self._started_ms: int | None = None  # when the kedro run began: the start of the runs it logs

    def _off(self, what: str, error: BaseException) -> None:
        logger.warning("Experiment tracking is off for this run: %s (%s: %s). The run goes on; see "
                       "docs/tracking.md.", what, type(error).__name__, error)
        self._config = None

    @hook_impl
    def after_context_created(self, context) -> None:
        self._config = None
        try:
            from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
        except Exception as error:  # noqa: BLE001 - mlflow or kedro-mlflow missing or broken
            self._off("kedro-mlflow cannot be imported", error)
            return
        setup = MlflowHook()
        try:
            setup.after_context_created(context)  # mlflow.yml, tracking URI, experiment; sets context.mlflow
        except Exception as error:  # noqa: BLE001
            uri = getattr(getattr(getattr(setup, "mlflow_config", None), "server", None), "mlflow_tracking_uri", "")
            self._off(f"the mlflow store {uri or '(conf/*/mlflow.yml)'} cannot be used", error)
            return
        self._config = setup.mlflow_config
        with contextlib.suppress(Exception):  # a read-only store still shows its runs
            mark_experiment_kind(self._config.server._mlflow_client,
                                 self._config.tracking.experiment._experiment.experiment_id)

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        import time

        self._started_ms = int(time.time() * 1000)
        self._catalog = catalog
        if self._config is None:
            return
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        names = [names] if isinstance(names, str) else list(names)
        disabled = set(self._config.tracking.disable_tracking.pipelines or [])
        if disabled & set(names):
            logger.info("mlflow tracking is disabled for pipeline %s in mlflow.yml", "+".join(names))
            self._config = None
            return
        facts = {"kedro.pipeline": "+".join(names), "kedro.env": run_params.get("env"),
                 "kedro.session_id": run_params.get("session_id") or run_params.get("run_id")}
        self._tags = {key: str(value) for key, value in facts.items() if value}

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data, node) -> None:
        if self._config is None or self._catalog is None:
            return

        try:
            dataset = self._catalog.get(dataset_name)
        except Exception:  # noqa: BLE001 - not a dataset this hook cares about
            return
        if not isinstance(dataset, PublishedReportDataset):
            return
        report_dir = Path(dataset._describe()["path"])
        self.track(report_dir, dataset_name.rsplit(".", 1)[0] if "." in dataset_name else report_dir.name)

    def track(self, report_dir: Path, namespace: str) -> str | None:
        """Logs the latest report of `report_dir`; any failure is a warning. Returns the new run's id, if any."""
        try:
            import mlflow

            client = self._config.server._mlflow_client
            active = mlflow.active_run()  # a run opened before the session (an orchestrator's): ours is its child
            experiment_id = (active.info.experiment_id if active
                             else self._config.tracking.experiment._experiment.experiment_id)
            run_id = log_report(client, experiment_id, report_dir, namespace, self._tags,
                                parent_run_id=active.info.run_id if active else None, started_ms=self._started_ms)
        except Exception as error:  # noqa: BLE001
            logger.warning("The %s report was published but not logged to mlflow (%s: %s); the next run that "
                           "saves it logs it. See docs/tracking.md.", namespace, type(error).__name__, error)
            return None
        if run_id:
            logger.info("mlflow: %s report logged as run %s (experiment '%s'; `kedro mlflow ui` to browse)",
                        namespace, run_id, self._config.tracking.experiment.name)
        return run_id

