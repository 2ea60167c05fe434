"""Experiment tracking: every published report becomes one mlflow run in the project's mlruns/ (docs/tracking.md)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from mlflow.tracking import MlflowClient

from eagle_pipelines.tracking import HISTORY_TAG, TrackingHook  # sets MLFLOW_ALLOW_FILE_STORE, telemetry off

from tests.conftest import link_shipped_model

TINY = {"shapes": {"splits": {"eval": 2}}, "superpixels": {"n_segments": 6}, "evaluation": {"pixel_steps": 4},
        "reporting": {"figure_samples": 1}, "eagle_coco": {"max_new_tokens": 6}, "baselines": {"methods": ["tam"]}}


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("eagle_pipelines.tracking")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def _bundle(n_segments: int, insertion: float) -> dict:
    metrics = pd.DataFrame({"method": ["eagle", "random"], "level": ["sentence"] * 2, "protocol": ["pixels"] * 2,
                            "n_samples": [2, 2], "insertion_auc": [insertion, 0.7], "deletion_auc": [0.4, None]})
    return {"metrics.csv": metrics, "metrics_per_sample.csv": metrics, "report.html": f"<p>{insertion}</p>",
            "figures/curves.png": b"\x89PNG" + str(insertion).encode(),
            "run.json": {"generated": "now", "git commit": "abc1234", "targets (sentence)": 2,
                         "params": {"superpixels": {"n_segments": n_segments}, "baselines": {"methods": ["tam"]},
                                    "experiment": {"max_new_tokens": 6}, "model": "toy_qwen2_5_vl"},
                         "coverage": {"n_targets": {"sentence": 2}, "not_made": [{"item": "x"}]}}}


def _session(project: Path):
    """A session on `project`, its context and the tracking hook it registered."""
    session = KedroSession.create(project_path=project)
    context = session.load_context()
    return session, context, session._hook_manager.get_plugin(TrackingHook.PLUGIN_NAME)


def _publish(hook: TrackingHook, context, bundle: dict, name: str = "eagle_coco.report") -> None:
    """What a run does when the reporting node's output is saved: the dataset's save, then the hook."""
    catalog = context.catalog
    hook.before_pipeline_run({"pipeline_names": ["eagle_coco"], "session_id": "s1"}, None, catalog)
    catalog.save(name, bundle)
    hook.after_dataset_saved(name, bundle, None)
    time.sleep(0.002)


def _runs(project: Path) -> list:
    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("eagle_pipelines")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_the_hook_takes_kedro_mlflows_place_and_logs_each_published_report_once(project, tmp_path):
    session, context, hook = _session(project)
    assert isinstance(hook, TrackingHook)  # kedro-mlflow's own hook is not registered beside it
    assert not [p for p in session._hook_manager.get_plugins() if type(p).__name__ == "MlflowHook"]
    assert context.mlflow.server.mlflow_tracking_uri == (project / "mlruns").as_uri()  # `kedro mlflow ui` reads it

    _publish(hook, context, _bundle(6, 0.9))
    [run] = _runs(project)
    report = project / "data" / "08_reporting" / "eagle_coco"
    stamp = os.readlink(report / "latest").split("/")[-1]
    assert run.info.status == "FINISHED" and run.data.tags[HISTORY_TAG] == stamp
    assert run.data.tags["eagle.namespace"] == "eagle_coco" and run.data.tags["kedro.pipeline"] == "eagle_coco"
    assert run.data.tags["eagle.run.targets_sentence"] == "2" and run.data.tags["mlflow.source.git.commit"] == "abc1234"
    assert run.data.params == {"superpixels.n_segments": "6", "baselines.methods": '["tam"]',
                               "experiment.max_new_tokens": "6", "model": "toy_qwen2_5_vl"}
    assert run.data.metrics == {"eagle.sentence.pixels.n_samples": 2.0, "eagle.sentence.pixels.insertion_auc": 0.9,
                                "eagle.sentence.pixels.deletion_auc": 0.4, "random.sentence.pixels.n_samples": 2.0,
                                "random.sentence.pixels.insertion_auc": 0.7, "coverage.n_targets.sentence": 2.0,
                                "coverage.not_made": 1.0}  # random's deletion_auc is missing (NaN): not logged
    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "metrics.csv", "metrics_per_sample.csv", "run.json", "figures"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/curves.png"]
    html = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="report.html",
                                               dst_path=str(tmp_path), tracking_uri=(project / "mlruns").as_uri())
    assert Path(html).read_text() == "<p>0.9</p>"

    _publish(hook, context, _bundle(6, 0.9))  # a rerun that changes nothing: no history entry, no mlflow run
    assert len(_runs(project)) == 1
    _publish(hook, context, {"x": 1}, name="eagle_coco.coverage")  # not a report: ignored
    _publish(hook, context, _bundle(8, 0.95))
    runs = _runs(project)
    assert len(runs) == 2 and runs[1].data.params["superpixels.n_segments"] == "8"
    assert runs[1].data.metrics["eagle.sentence.pixels.insertion_auc"] == 0.95
    session.close()


def test_an_unusable_store_is_a_warning_and_the_next_run_logs_what_was_missed(project, records):
    (project / "mlruns").write_text("not a folder")
    session, context, hook = _session(project)
    assert any("Experiment tracking is off for this run" in m and "mlruns" in m for m in records)
    _publish(hook, context, _bundle(6, 0.9))  # the report is still published
    assert (project / "data" / "08_reporting" / "eagle_coco" / "latest" / "metrics.csv").is_file()
    session.close()

    (project / "mlruns").unlink()
    session, context, hook = _session(project)
    _publish(hook, context, _bundle(6, 0.9))  # changes nothing, but its report is not on record yet
    [run] = _runs(project)
    assert run.data.metrics["eagle.sentence.pixels.insertion_auc"] == 0.9
    session.close()


def test_a_failure_while_logging_is_a_warning_and_leaves_no_half_run(project, records, monkeypatch):
    session, context, hook = _session(project)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("eagle_pipelines.tracking.store_artifacts", broken)  # linked or uploaded: either fails
    _publish(hook, context, _bundle(6, 0.9))
    assert any("published but not logged to mlflow (OSError: disk full)" in m for m in records)
    assert _runs(project) == []  # the half-logged run is deleted
    monkeypatch.undo()
    hook.track(project / "data" / "08_reporting" / "eagle_coco", "eagle_coco")  # the next save logs it
    assert len(_runs(project)) == 1
    session.close()


def test_without_kedro_mlflow_a_run_goes_on(project, records, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kedro_mlflow.framework.hooks.mlflow_hook", None)  # import fails
    session, context, hook = _session(project)
    assert any("kedro-mlflow cannot be imported" in m for m in records)
    _publish(hook, context, _bundle(6, 0.9))
    assert not (project / "mlruns").exists()
    session.close()


def test_tracking_can_be_turned_off_per_pipeline_in_mlflow_yml(project):
    import yaml

    conf = project / "conf" / "base" / "mlflow.yml"
    settings = yaml.safe_load(conf.read_text())
    settings["tracking"]["disable_tracking"]["pipelines"] = ["eagle_coco"]
    conf.write_text(yaml.safe_dump(settings))
    session, context, hook = _session(project)
    _publish(hook, context, _bundle(6, 0.9))
    assert _runs(project) == []
    session.close()


def test_a_run_opened_before_the_session_gets_each_report_as_a_child(project):
    mlflow.set_tracking_uri((project / "mlruns").as_uri())
    parent = mlflow.start_run(experiment_id=MlflowClient().create_experiment("orchestrator"))
    try:
        session, context, hook = _session(project)
        _publish(hook, context, _bundle(6, 0.9))
        session.close()
    finally:
        mlflow.end_run()
    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    [child] = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert child.data.metrics["eagle.sentence.pixels.insertion_auc"] == 0.9


@pytest.mark.slow
def test_a_tiny_eagle_coco_run_is_tracked_and_a_rerun_that_changes_nothing_adds_no_mlflow_run(project):
    link_shipped_model(project)
    for _ in range(2):
        with KedroSession.create(project_path=project, runtime_params=TINY) as session:
            session.run(pipeline_name="eagle_coco")
    history = list((project / "data" / "08_reporting" / "eagle_coco" / "history").iterdir())
    [run] = _runs(project)
    assert len(history) == 1 and run.data.tags[HISTORY_TAG] == history[0].name
    assert run.data.params["evaluation.pixel_steps"] == "4" and run.data.params["baselines.methods"] == '["tam"]'
    assert run.data.params["experiment.max_new_tokens"] == "6" and run.data.params["model"] == "toy_qwen2_5_vl"
    metrics = pd.read_csv(history[0] / "metrics.csv")
    eagle = metrics[(metrics.method == "eagle") & (metrics.level == "sentence") & (metrics.protocol == "pixels")]
    assert run.data.metrics["eagle.sentence.pixels.insertion_auc"] == pytest.approx(eagle.insertion_auc.iloc[0])
    assert {"tam.sentence.pixels.insertion_auc", "random.word.regions.deletion_auc"} <= run.data.metrics.keys()
    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "figures/curves.png" in {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
