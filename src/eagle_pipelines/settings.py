"""Kedro project settings."""

from eagle_pipelines.hooks import ParameterValidationHook

# Parameters are validated before any node runs, so a wrong value fails at start with its name.
HOOKS = (ParameterValidationHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
