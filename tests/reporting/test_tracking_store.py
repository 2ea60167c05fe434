"""mlflow tracking as a user sees it (issue 26 item 5): a run lasts as long as the kedro run that published the
report, the report's files are stored once (the mlflow artifacts are hard links to the history entry), the
experiment opens on mlflow 3's runs table, and `kedro mlflow ui` runs this environment's mlflow."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import mlflow
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from eagle_pipelines.tracking import EXPERIMENT_KIND, _stamp_ms
from tests.reporting.test_tracking import _bundle, _runs, _session


def test_a_logged_run_spans_the_kedro_run_and_its_artifacts_are_the_reports_files(project, tmp_path):
    session, context, hook = _session(project)
    catalog = context.catalog
    hook.before_pipeline_run({"pipeline_names": ["eagle_coco"], "session_id": "s1"}, None, catalog)
    time.sleep(0.6)  # the pipeline's work before the report
    bundle = _bundle(6, 0.9)
    catalog.save("eagle_coco.report", bundle)
    hook.after_dataset_saved("eagle_coco.report", bundle, None)
    [run] = _runs(project)
    report = project / "data" / "08_reporting" / "eagle_coco"
    entry = report / "history" / os.readlink(report / "latest").split("/")[-1]
    assert run.info.end_time == _stamp_ms(entry.name)  # ends when the report was published, not when logged
    assert run.info.end_time - run.info.start_time >= 600

    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    files = sorted(p.relative_to(entry) for p in entry.rglob("*") if p.is_file())
    assert files and sorted(p.relative_to(artifacts) for p in artifacts.rglob("*") if p.is_file()) == files
    for name in files:  # one copy on disk: the same inode, and mlflow serves it
        assert (artifacts / name).stat().st_ino == (entry / name).stat().st_ino
        assert not (artifacts / name).is_symlink()
    html = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="report.html",
                                               dst_path=str(tmp_path), tracking_uri=(project / "mlruns").as_uri())
    assert Path(html).read_text() == "<p>0.9</p>"

    client = MlflowClient(tracking_uri=(project / "mlruns").as_uri())
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags.get(EXPERIMENT_KIND[0]) == EXPERIMENT_KIND[1]  # mlflow 3 opens it on the runs table
    session.close()


def test_artifacts_are_copied_where_a_hard_link_cannot_be_made(project, monkeypatch):
    def no_link(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    session, context, hook = _session(project)
    hook.before_pipeline_run({"pipeline_names": ["eagle_coco"], "session_id": "s1"}, None, context.catalog)
    bundle = _bundle(6, 0.8)
    context.catalog.save("eagle_coco.report", bundle)
    hook.after_dataset_saved("eagle_coco.report", bundle, None)
    [run] = _runs(project)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "report.html").read_text() == "<p>0.8</p>"
    assert (artifacts / "report.html").stat().st_nlink == 1
    session.close()


def test_kedro_mlflow_ui_runs_this_pythons_mlflow_on_the_projects_store(project, monkeypatch):
    import subprocess

    from eagle_pipelines import cli as project_cli

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, **kw: calls.append((args, kw.get("env") or {})) or 0)
    monkeypatch.chdir(project)
    monkeypatch.setenv("PATH", "/nonexistent")  # no `mlflow` on the PATH, as with the venv not activated
    group = project_cli.cli.commands["mlflow"]
    assert {"init", "ui", "modelify"} <= set(group.commands)  # kedro-mlflow's other commands are kept
    result = CliRunner().invoke(project_cli.cli, ["mlflow", "ui", "--port", "5123"])
    assert result.exit_code == 0, result.output
    [(args, env)] = calls
    assert args[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert args[args.index("--backend-store-uri") + 1] == (project / "mlruns").as_uri()
    assert args[args.index("--port") + 1] == "5123" and env["MLFLOW_ALLOW_FILE_STORE"] == "true"
    assert "/#/experiments/" in result.output and "?workflowType=machine_learning" in result.output
    assert result.output.rstrip().endswith("(Ctrl+C stops the server)")
