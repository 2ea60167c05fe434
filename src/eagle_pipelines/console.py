"""What a ``kedro run`` prints: library warnings that are not the user's to act on are silenced, parameter loads
stay at DEBUG, and a log that goes to a file or a pipe is plain lines (no 80-column wrapping, no colour codes).

- ``quiet_library_warnings()`` (called from settings.py, before Kedro builds its config loader and before
  kedro-mlflow's CLI imports mlflow): Kedro 1.7 and kedro-mlflow register their resolvers through OmegaConf 2.4's
  deprecated ``register_new_resolver`` (3 warnings per run), mlflow warns, with raw ANSI colour codes, that
  kedro-mlflow's ``KedroPipelineModel.predict`` has no type hints (this project logs no pyfunc model), and
  kedro-viz imports FastAPI's deprecated ``ORJSONResponse``. Each filter
  matches one message from one library only, so the same words from any other code still show.
- ``install_console()`` (called from settings.py too, after Kedro applied conf/logging.yml): Kedro's
  ``RichHandler`` stays on a terminal or in a notebook; anywhere else (``kedro run > run.log``, CI) it becomes a
  plain ``StreamHandler`` on stdout: one line per record, as long as the message, without the path column or
  escape codes. ``SkipParameterLoads`` on the handlers drops Kedro's "Loading data from params:..." lines (one per
  parameter group and node, ~15 % of a run's output) unless the ``kedro`` logger is at DEBUG; loads of datasets
  are still logged. (Kedro 1.7 allows only ``logging`` and ``kedro.logging`` classes in conf/logging.yml unless
  ``KEDRO_LOGGING_MODULE_ALLOWLIST`` names more, so this is done in code, not in that file.) Kedro's first line
  ("Using 'conf/logging.yml' as logging configuration") is printed before the project loads, by Rich.
- ``progress_bar()`` (the project's progress bars, tqdm's): on a terminal or in a notebook a live tqdm bar; when
  its stream (stderr) is not a terminal (``kedro run 2>&1 | tee run.log``, CI) no carriage-return rewrites at all:
  the bar's state is logged as one plain line (``eagle_pipelines.progress``) at most every ``PIPED_INTERVAL``
  seconds, and once when a kept bar ends (``leave=False`` bars, the per-image searches, log only the long ones);
  ``install_console`` turns Hugging Face's bars off there too (``quiet_library_progress``).
- ``SkipNotYetMade`` on kedro-viz's loggers: `make viz` before the pipelines ran prints no "could not be
  previewed" warning for an output that does not exist yet (56 on a fresh clone); other preview failures show.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

from tqdm import autonotebook, std
from tqdm.auto import tqdm

#: the library warnings silenced: (message regex, the warning code's package). A warnings filter matches the
#: message and the module; mlflow sets its own filter around its type-hint check (``filter_user_warnings_once``),
#: so a filter on the ``py.warnings`` logger (where Kedro's logging puts warnings) drops the same pairs as well.
LIBRARY_WARNINGS = (
    (r"register_new_resolver\(\) is deprecated", ("kedro", "kedro_mlflow")),
    (r"(\x1b\[\d+m)?Add type hints to the `predict` method", ("mlflow",)),
    (r"ORJSONResponse is deprecated", ("kedro_viz",)),  # FastAPI's, at kedro-viz's import (`make viz`)
)

#: the plain format: Kedro's RichHandler columns (time, level, message) without the path
PLAIN_FORMAT = "[%(asctime)s] %(levelname)-8s %(message)s"
PLAIN_DATE = "%m/%d/%y %H:%M:%S"


#: a progress bar on a stream that is not a terminal logs a line at most this often (seconds)
PIPED_INTERVAL = 30.0
#: the logged line of such a bar: tqdm's fields without the bar itself
PIPED_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, {remaining} left, {rate_fmt}{postfix}]"
progress_log = logging.getLogger("eagle_pipelines.progress")


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal or in a notebook (tqdm.auto); on a stream that is not a terminal
    a ``LoggedProgress`` (the same counting, logged as plain lines every ``PIPED_INTERVAL`` s; no ``\\r``)."""
    stream = kwargs.get("file") or sys.stderr
    notebook = autonotebook.tqdm is not std.tqdm  # tqdm.autonotebook picks the notebook's bar in a kernel
    if kwargs.get("disable") or notebook or _isatty(stream):
        return tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", PIPED_INTERVAL)  # and tqdm's monitor refreshes no more often than that
    kwargs["maxinterval"] = max(kwargs.get("maxinterval", 10.0), kwargs["mininterval"])
    return LoggedProgress(iterable, **{**kwargs, "file": _Discard()})


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _Discard:
    """The stream of a ``LoggedProgress``: tqdm's own writes (a newline when a bar closes) go nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class LoggedProgress(std.tqdm):
    """A tqdm whose display is one log record (``PIPED_FORMAT``) per refresh with progress made since the last one;
    tqdm refreshes at most every `mininterval` seconds and when a kept (``leave``) bar closes."""

    def display(self, msg=None, pos=None):
        if msg is None and self.n and self.n != getattr(self, "_logged_n", None):
            self._logged_n = self.n
            progress_log.info("%s", self.format_meter(**{**self.format_dict, "bar_format": PIPED_FORMAT}))
        return True


def quiet_library_progress() -> None:
    """No Hugging Face progress bar (transformers' "Loading weights", hub downloads) on a stream that is not a
    terminal: ``HF_HUB_DISABLE_PROGRESS_BARS`` (read when huggingface_hub is imported; transformers takes its
    default from it), and transformers' own switch when it is imported already."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()


def quiet_library_warnings() -> None:
    """Installs the filters of ``LIBRARY_WARNINGS`` (idempotent: warnings.filterwarnings drops duplicates)."""
    for message, packages in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=rf"({'|'.join(packages)})(\.|$)")
    warning_log = logging.getLogger("py.warnings")
    if not any(isinstance(f, LibraryWarningRecords) for f in warning_log.filters):
        warning_log.addFilter(LibraryWarningRecords())


class LibraryWarningRecords(logging.Filter):
    """Drops the ``py.warnings`` records (``logging.captureWarnings``) of ``LIBRARY_WARNINGS``: the formatted
    warning ``<path>:<line>: <Category>: <message>`` whose path is in one of the packages."""

    PATTERNS = tuple(re.compile(rf"[/\\]({'|'.join(packages)})[/\\][^:]*:\d+: \w+: {message}")
                     for message, packages in LIBRARY_WARNINGS)

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not any(pattern.search(text) for pattern in self.PATTERNS)


def plain_handler(stream=None, level: int = logging.NOTSET) -> logging.Handler:
    """One unwrapped line per record on `stream` (stdout by default, where Kedro's RichHandler writes)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATE))
    return handler


def install_console(logger: logging.Logger | None = None) -> None:
    """The run's console, set up once the project's settings load (after Kedro applied conf/logging.yml, whose
    handler classes Kedro 1.7 restricts to ``logging`` and ``kedro.logging``): library warnings silenced
    (``quiet_library_warnings``); each Rich handler of the root `logger` that does not write to a terminal or a
    notebook replaced by ``plain_handler`` (its level and filters kept); ``SkipParameterLoads`` on every
    handler. Idempotent."""
    from rich.logging import RichHandler

    quiet_library_warnings()
    logger = logger or logging.getLogger()
    for handler in list(logger.handlers):
        if isinstance(handler, RichHandler) and not (handler.console.is_terminal or handler.console.is_jupyter):
            plain = plain_handler(handler.console.file, handler.level)
            for old in handler.filters:
                plain.addFilter(old)
            logger.handlers[logger.handlers.index(handler)] = plain  # in its place
    for handler in logger.handlers:
        if not any(isinstance(f, SkipParameterLoads) for f in handler.filters):
            handler.addFilter(SkipParameterLoads())
    if not _isatty(sys.stderr):
        quiet_library_progress()
    for name in NOT_YET_MADE_LOGGERS:
        viz = logging.getLogger(name)
        if not any(isinstance(f, SkipNotYetMade) for f in viz.filters):
            viz.addFilter(SkipNotYetMade())


#: kedro-viz's loggers that warn about outputs no run has made yet (`make viz` before the pipelines ran)
NOT_YET_MADE_LOGGERS = ("kedro_viz.models.flowchart.node_metadata", "kedro_viz.api.rest.responses.run_events")
#: what such a warning says: a file that is not there, or one of our datasets' "has not run" / "does not exist"
NOT_YET_MADE = re.compile(r"No such file or directory|FileNotFoundError|does not exist: its producer has not run|"
                          r"their node has not run|Run events file .* not found")


class SkipNotYetMade(logging.Filter):
    """Drops kedro-viz's "'<dataset>' could not be previewed" warnings for outputs that do not exist yet (and its
    "Run events file ... not found" before any run): the lineage is built before the pipelines ran, and the
    dataset simply has no preview yet. A preview that fails on data that is there is still a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        previews = "could not be previewed" in message or "Run events file" in message
        return not (previews and NOT_YET_MADE.search(message))


class SkipParameterLoads(logging.Filter):
    """Drops Kedro's "Loading data from params:<group>" records unless the ``kedro`` logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kedro.io") or record.levelno > logging.INFO:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is another handler's problem
            return True
        if not message.startswith("Loading data from params:"):
            return True
        return logging.getLogger("kedro").isEnabledFor(logging.DEBUG)
