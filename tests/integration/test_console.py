"""What a run prints (issue 26 item 6): no library deprecation or type-hint warnings, no escape codes and no
80-column wrapping when the log goes to a file or a pipe, Kedro's per-parameter load lines only at DEBUG; and the
smoke run (`make demo`) keeps its outputs apart from the checkout's data/."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from rich.console import Console

from eagle_pipelines.console import (LibraryWarningRecords, LoggedProgress, SkipParameterLoads, install_console,
                                     progress_bar, quiet_library_warnings)

ROOT = Path(__file__).parents[2]


def _record(name: str, message: str, *args, level=logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_parameter_loads_are_left_out_unless_kedro_logs_at_debug():
    skip, kedro = SkipParameterLoads(), logging.getLogger("kedro")
    params = _record("kedro.io.data_catalog", "Loading data from %s (%s)...", "params:attribution", "MemoryDataset")
    data = _record("kedro.io.data_catalog", "Loading data from %s (%s)...", "eagle_coco.answers", "JSONDataset")
    level = kedro.level
    try:
        kedro.setLevel(logging.INFO)
        assert not skip.filter(params) and skip.filter(data)
        kedro.setLevel(logging.DEBUG)
        assert skip.filter(params)
    finally:
        kedro.setLevel(level)


def test_only_the_named_library_warnings_are_silenced():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_warnings()
        message = "register_new_resolver() is deprecated and will be removed in a future release."
        warnings.warn_explicit(message, UserWarning, "omegaconf_config.py", 637, module="kedro.config.omegaconf_config")
        warnings.warn_explicit(message, UserWarning, "mine.py", 1, module="my_package.config")  # ours would show
        warnings.warn_explicit("\x1b[33mAdd type hints to the `predict` method\x1b[0m", UserWarning, "dv.py", 187,
                               module="mlflow.pyfunc.utils.data_validation")
    assert [w.filename for w in seen] == ["mine.py"]
    # mlflow's own "once" filter around its check overrides warnings filters: its logged record is dropped
    records = LibraryWarningRecords()
    hint = "/venv/lib/site-packages/mlflow/pyfunc/utils/data_validation.py:187: UserWarning: \x1b[33mAdd type hints " \
           "to the `predict` method to enable data validation"
    assert not records.filter(_record("py.warnings", hint, level=logging.WARNING))
    assert records.filter(_record("py.warnings", hint.replace("/mlflow/", "/my_package/"), level=logging.WARNING))
    assert records.filter(_record("py.warnings", "/x/PIL/Image.py:3402: DecompressionBombWarning: Image size",
                                  level=logging.WARNING))


def test_a_piped_log_is_plain_unwrapped_lines_and_a_terminal_keeps_rich():
    from kedro.logging import RichHandler

    piped, terminal = io.StringIO(), io.StringIO()
    logger = logging.getLogger("test_console_root")
    logger.handlers = [RichHandler(console=Console(file=piped)),
                       RichHandler(console=Console(file=terminal, force_terminal=True))]
    logger.propagate, logger.level = False, logging.INFO
    install_console(logger)
    plain, rich = logger.handlers
    assert not isinstance(plain, RichHandler) and isinstance(rich, RichHandler)
    long = "a message longer than eighty columns:" + " word" * 30
    logger.info(long)
    logger.info("Loading data from %s (%s)...", "params:superpixels", "MemoryDataset")  # not kedro's: kept
    lines = piped.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].endswith(long) and "\x1b[" not in piped.getvalue()
    assert re.match(r"\[\d\d/\d\d/\d\d \d\d:\d\d:\d\d\] INFO +a message", lines[0])
    install_console(logger)  # idempotent
    assert len(logger.handlers) == 2 and sum(isinstance(f, SkipParameterLoads) for f in plain.filters) == 1


class _Stream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def _enable_hf_bars(hf_logging) -> None:
    """transformers' bars on (huggingface_hub warns, and keeps its own off, once the variable was read as 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hf_logging.enable_progress_bar()


def test_a_piped_progress_bar_logs_plain_lines_and_a_terminal_keeps_tqdm(monkeypatch):
    """Progress on a stream that is not a terminal: no carriage return anywhere, the count logged as plain lines
    through the console's handler, transformers' own bars ("Loading weights") off; on a terminal tqdm's live bar
    (carriage-return rewrites) as before."""
    import transformers.utils.logging as hf_logging
    from kedro.logging import RichHandler

    root, log, stderr = logging.getLogger(), io.StringIO(), _Stream(terminal=False)
    saved = root.handlers[:], root.level
    root.handlers, root.level = [RichHandler(console=Console(file=log))], logging.INFO
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    _enable_hf_bars(hf_logging)
    try:
        install_console(root)
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and not hf_logging.is_progress_bar_enabled()
        for _ in hf_logging.tqdm(range(3), desc="Loading weights"):  # as transformers loads a checkpoint
            pass
        piped, terminal = _Stream(terminal=False), _Stream(terminal=True)
        bar = progress_bar(total=3, desc="baselines", unit="item", file=piped, mininterval=0)
        assert isinstance(bar, LoggedProgress)
        with bar:
            for _ in range(3):
                bar.update(1)
        for _ in progress_bar(range(2), desc="search", unit="region", file=piped, leave=False, mininterval=60):
            pass  # shorter than the interval and not kept: nothing logged
        with progress_bar(total=3, desc="baselines", unit="item", file=terminal, mininterval=0) as live:
            assert not isinstance(live, LoggedProgress)
            live.update(3)
    finally:
        root.handlers, root.level = saved
        _enable_hf_bars(hf_logging)
    lines = log.getvalue().splitlines()
    assert stderr.getvalue() == "" and piped.getvalue() == "" and "\r" not in log.getvalue() and "\x1b[" not in log.getvalue()
    assert [line.split("] INFO", 1)[1].strip().split(" [")[0] for line in lines] == [
        "baselines: 1/3 item", "baselines: 2/3 item", "baselines: 3/3 item"], lines
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_the_demo_command_merges_its_params_with_the_users():
    from eagle_pipelines.demo import DEMO_PARAMS, command

    cmd = command(2, ["--params", "superpixels.n_segments=6,baselines.methods=[tam]", "--runner", "SequentialRunner"])
    assert cmd[3:] == ["run", "--pipelines=eagle_coco", f"--params=eagle_coco.max_images=2,{DEMO_PARAMS},"
                       "superpixels.n_segments=6,baselines.methods=[tam]", "--runner", "SequentialRunner"]
    assert [a for a in command(3, ["--params=a.b=1"]) if a.startswith("--params")] == [
        f"--params=eagle_coco.max_images=3,{DEMO_PARAMS},a.b=1"]
    # Kedro's own parsing of the merged value: the user's key wins
    from kedro.framework.cli.utils import _split_params

    parsed = _split_params(None, None, command(2, ["--params", "superpixels.n_segments=6"])[5].split("=", 1)[1])
    assert parsed["superpixels"]["n_segments"] == 6 and parsed["evaluation"]["pixel_steps"] == 8


@pytest.mark.slow
def test_the_demo_runs_eagle_coco_quietly_in_its_own_folder(tmp_path):
    """`make demo` on 1 image: the report in demo/, nothing written to data/; its piped log has no deprecation
    warning, no escape code, no per-parameter load line, no wrapped line."""
    from tests.conftest import copy_project

    project = copy_project(tmp_path / "checkout", shipped_model=True)
    before = sorted(p.relative_to(project) for p in (project / "data").rglob("*"))
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("COLUMNS", None)
    params = "superpixels.n_segments=6,evaluation.pixel_steps=4,reporting.figure_samples=1,baselines.methods=[tam]"
    result = subprocess.run([sys.executable, "-m", "eagle_pipelines.demo", "--images", "1", "--", "--params",
                             f"eagle_coco.max_images=1,{params}"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=1800)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert (project / "demo/data/08_reporting/eagle_coco/latest/report.html").is_file()
    assert sorted(p.relative_to(project) for p in (project / "data").rglob("*")) == before
    assert not (project / "mlruns").exists() and (project / "demo/mlruns").is_dir()
    assert "Deprecat" not in log and "deprecated" not in log and "\x1b[" not in log and "\r" not in log
    assert "Add type hints" not in log and "Loading data from params:" not in log
    assert "Loading data from" in log  # datasets' loads are still logged
    lines = log.splitlines()
    assert any(len(line) > 100 for line in lines)  # not wrapped at 80 columns
    # no Rich continuation line, but for Kedro's first record (printed before the project loads, 4 lines)
    assert [i for i, line in enumerate(lines) if re.match(r"^ {20,}\S", line)] == [1, 2, 3]
