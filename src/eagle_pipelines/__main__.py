"""Runs the project as ``python -m eagle_pipelines`` (same as ``kedro run``)."""

import sys
from pathlib import Path
from typing import Any


def main(*args, **kwargs) -> Any:
    from eagle_pipelines.extras import MissingExtraError, require

    try:
        require("kedro", "eagle-pipelines (the Kedro project)")
    except MissingExtraError as exc:
        sys.exit(f"eagle-pipelines: {exc}")
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)
    kwargs["standalone_mode"] = not hasattr(sys, "ps1")
    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
