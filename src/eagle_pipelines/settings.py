"""Kedro project settings."""

from eagle_pipelines.console import install_console

# The console (src/eagle_pipelines/console.py), before Kedro builds its config loader and kedro-mlflow imports
# mlflow: their deprecation and type-hint warnings silenced (not the user's to act on), plain unwrapped lines
# when the log goes to a file or a pipe, Kedro's per-parameter "Loading data from params:..." lines at DEBUG only.
install_console()

from eagle_pipelines.hooks import ComputeHook, InputCheckHook, ParameterValidationHook
from eagle_pipelines.provenance import ProvenanceCatalog, ProvenanceHook
from eagle_pipelines.timings import NodeTimingHook
from eagle_pipelines.tracking import TrackingHook

# Before any node runs: parameters are validated (a wrong value fails with its name), and the inputs the user
# supplies (datasets, model checkpoints) are checked (a missing one fails with its path and how to obtain it).
# pluggy calls the hook registered last first: parameters, then inputs.
# Then provenance: the data folder is locked for this run, outputs made under other parameters count as missing
# (--only-missing-outputs), and a partial run whose inputs are stale stops (src/eagle_pipelines/provenance.py).
# Then where the per-item jobs run (params:compute: this process or Ray workers; the workers stop after the run).
# Last: each node's wall seconds (run.json `timings`, src/eagle_pipelines/timings.py).
HOOKS = (NodeTimingHook(), ComputeHook(), TrackingHook(), ProvenanceHook(), InputCheckHook(), ParameterValidationHook())
DATA_CATALOG_CLASS = ProvenanceCatalog
# Experiment tracking: TrackingHook (src/eagle_pipelines/tracking.py) stands in for kedro-mlflow's own hook, so a
# report's run is logged once and an unusable mlruns/ store only warns (docs/tracking.md).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow",)

from kedro.config import OmegaConfigLoader  # noqa: E402


class ConfigLoader(OmegaConfigLoader):
    """Kedro's loader; credentials also come from conf/local/ when another environment runs (``--env=s3`` reads
    its ``s3`` entry from conf/local/credentials.yml, which is never committed; the environment's own win)."""

    def __getitem__(self, key):
        from pathlib import Path

        from kedro.config import MissingConfigException

        other = key == "credentials" and (self.env or self.default_run_env) not in ("local", self.base_env) \
            and (Path(self.conf_source) / "local").is_dir()
        try:
            value = super().__getitem__(key)
        except MissingConfigException:
            if not other:
                raise
            value = {}
        if other:  # read the files themselves: a second config loader would re-register the `globals` resolver
            # (Kedro registers it per loader), and the run's catalog would then resolve another environment's globals
            from omegaconf import OmegaConf

            local = {}
            for file in sorted((Path(self.conf_source) / "local").glob("credentials*.yml")):
                local.update(OmegaConf.to_container(OmegaConf.load(file), resolve=True) or {})
            value = {**local, **(value or {})}
        return value


CONFIG_LOADER_CLASS = ConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameter files name only what they change (conf/paper/ over conf/base/).
    "merge_strategy": {"parameters": "soft"},
}
