"""The project's own Kedro commands (Kedro loads ``<package>.cli``): ``kedro run`` as Kedro's, except that the
mistakes a user can fix (a wrong parameter, a missing input or checkpoint, a stale input of a partial run, another
run holding the data folder, an unknown environment) print their message alone, without a traceback, and exit
with status 2."""

from __future__ import annotations

import copy
import functools
import sys

import click
from kedro.framework.cli.project import run as kedro_run

USER_ERRORS = ("ParameterError", "MissingInputError", "StaleInputError", "ProjectLockedError",
               "MissingConfigException")


def _user_error(exc: BaseException) -> BaseException | None:
    """`exc` or the first error in its chain that a user fixes by changing the command or the configuration."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in USER_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _clean_errors(callback):
    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a user error
            error = _user_error(exc)
            if error is None:
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
