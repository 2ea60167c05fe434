"""The project's own Kedro commands (Kedro loads ``<package>.cli``): ``kedro run`` as Kedro's, except that the
mistakes a user can fix (a wrong parameter, a missing input or checkpoint, a stale input of a partial run, another
run holding the data folder, a read-only data folder, an unknown environment or node name, a damaged input file:
every ``errors.UserError``) print their message alone, without a traceback, and exit with status 2.
``EAGLE_TRACEBACK=1`` shows the traceback as well."""

from __future__ import annotations

import copy
import difflib
import functools
import sys

import click
from kedro.framework.cli.project import run as kedro_run

from eagle_pipelines.errors import UserError, show_traceback

#: user errors of other libraries (Kedro's), by class name
USER_ERRORS = ("MissingConfigException",)


class UnknownNodeError(UserError, ValueError):
    """A --from-nodes / --to-nodes / --nodes name that no node of the pipeline has."""


def _user_error(exc: BaseException) -> BaseException | None:
    """`exc` or the first error in its chain that a user fixes by changing the command or the configuration."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError) or type(exc).__name__ in USER_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _names(value) -> list[str]:
    if not value:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [n.strip() for item in items for n in str(item).split(",") if n.strip()]


def check_node_names(kwargs: dict) -> None:
    """--from-nodes, --to-nodes and --nodes name nodes of the pipelines run; an unknown name is an
    ``UnknownNodeError`` listing the close matches (Kedro's own is a traceback)."""
    from kedro.framework.project import pipelines

    chosen = ([kwargs["pipeline"]] if kwargs.get("pipeline") else list(kwargs.get("pipelines") or [])) \
        or ["__default__"]
    known: set[str] = set()
    for name in chosen:
        if name not in pipelines:  # Kedro names an unknown pipeline itself
            return
        known |= {node.name for node in pipelines[name].nodes}
    problems = []
    for option, key in (("--from-nodes", "from_nodes"), ("--to-nodes", "to_nodes"), ("--nodes", "node_names")):
        for name in _names(kwargs.get(key)):
            if name in known:
                continue
            # by the last part of the name (the namespace prefix would make every node look close), then whole
            last = {k: k.rsplit(".", 1)[-1] for k in known}
            near = set(difflib.get_close_matches(name.rsplit(".", 1)[-1], set(last.values()), n=3, cutoff=0.75))
            close = sorted(k for k, tail in last.items() if tail in near)[:3]
            close += [k for k in difflib.get_close_matches(name, known, n=3, cutoff=0.85) if k not in close]
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
                f"`kedro registry describe {chosen[0]}` lists its nodes"
            problems.append(f"{option} '{name}' is no node of pipeline {', '.join(chosen)}; {hint}")
    if problems:
        raise UnknownNodeError("\n".join(problems))


def _clean_errors(callback):
    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            check_node_names(kwargs)
            return callback(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
            error = _user_error(exc)
            if error is None or show_traceback():
                raise
            click.secho(f"Error: {error}", fg="red", err=True)
            sys.exit(2)

    return wrapper


@click.group(name="eagle_pipelines")
def cli() -> None:
    """eagle_pipelines' commands."""


run = copy.copy(kedro_run)
run.callback = _clean_errors(kedro_run.callback)
cli.add_command(run, "run")


# -- kedro mlflow ui ------------------------------------------------------------------------------------------------
def _mlflow_group() -> click.Group | None:
    """kedro-mlflow's ``kedro mlflow`` commands with ``ui`` replaced by ``mlflow_ui`` (the project's cli.py
    overrides a plugin's command of the same name); None without kedro-mlflow."""
    try:
        from kedro_mlflow.framework.cli.cli import mlflow_commands
    except Exception:  # noqa: BLE001 - kedro-mlflow missing or broken: its commands are not offered
        return None
    group = click.Group(name="mlflow", help=mlflow_commands.help)
    for name, command in mlflow_commands.commands.items():
        group.add_command(mlflow_ui if name == "ui" else command, name)
    return group


@click.command(name="ui")
@click.option("--env", "-e", default="local", help="The environment within conf folder we want to retrieve.")
@click.option("--port", "-p", default=None, help="The port to listen on (default: mlflow.yml ui.port, 5000)")
@click.option("--host", "-h", default=None, help="The network address to listen on (default: mlflow.yml ui.host)")
def mlflow_ui(env: str, port: str | None, host: str | None) -> None:
    """Opens mlflow's user interface on the project's store (mlflow.yml), with the mlflow of this Python
    environment: `kedro mlflow ui` works without the virtual environment activated (kedro-mlflow's own runs
    `mlflow` from the PATH). Prints the address of the experiment's runs table."""
    import os
    import subprocess
    import webbrowser
    from pathlib import Path

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.utils import find_kedro_project

    project_path = find_kedro_project(Path.cwd()) or Path.cwd()
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env) as session:
        context = session.load_context()
        config = getattr(context, "mlflow", None)
        if config is None:
            raise click.ClickException("the mlflow store cannot be used (see the warning above; docs/tracking.md)")
        host = host or config.ui.host
        port = str(port or config.ui.port)
        uri = config.server.mlflow_tracking_uri
        if uri.startswith("http"):
            webbrowser.open(uri)
            return
        experiment = config.tracking.experiment
        # mlflow 3 opens an experiment on its GenAI traces page unless told the "model training" workflow
        experiment_id = experiment._experiment.experiment_id
        page = f"http://{host}:{port}/#/experiments/{experiment_id}?workflowType=machine_learning"
        click.echo(f"mlflow: experiment '{experiment.name}' at {page} (Ctrl+C stops the server)")
    env_vars = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": os.environ.get("MLFLOW_ALLOW_FILE_STORE", "true")}
    code = subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                            "--port", port], env=env_vars)
    sys.exit(code)


_mlflow = _mlflow_group()
if _mlflow is not None:
    cli.add_command(_mlflow, "mlflow")
