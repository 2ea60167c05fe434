"""Kedro project settings."""

from eagle_pipelines.hooks import ComputeHook, InputCheckHook, ParameterValidationHook
from eagle_pipelines.provenance import ProvenanceCatalog, ProvenanceHook
from eagle_pipelines.tracking import TrackingHook

# Before any node runs: parameters are validated (a wrong value fails with its name), and the inputs the user
# supplies (datasets, model checkpoints) are checked (a missing one fails with its path and how to obtain it).
# pluggy calls the hook registered last first: parameters, then inputs.
# Then provenance: the data folder is locked for this run, outputs made under other parameters count as missing
# (--only-missing-outputs), and a partial run whose inputs are stale stops (src/eagle_pipelines/provenance.py).
# Last: where the per-item jobs run (params:compute: this process or Ray workers; the workers stop after the run).
HOOKS = (ComputeHook(), TrackingHook(), ProvenanceHook(), InputCheckHook(), ParameterValidationHook())
DATA_CATALOG_CLASS = ProvenanceCatalog
# Experiment tracking: TrackingHook (src/eagle_pipelines/tracking.py) stands in for kedro-mlflow's own hook, so a
# report's run is logged once and an unusable mlruns/ store only warns (docs/tracking.md).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow",)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameter files name only what they change (conf/paper/ over conf/base/).
    "merge_strategy": {"parameters": "soft"},
}
