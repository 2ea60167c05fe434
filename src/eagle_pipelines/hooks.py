"""Project hooks."""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl

from eagle_pipelines.parameters import PARAMETER_MODELS, parse

logger = logging.getLogger(__name__)


class ParameterValidationHook:
    """Validates every parameter group the pipeline reads before any node runs."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        used = {name.split(":", 1)[1].split(".")[0] for name in pipeline.inputs() if name.startswith("params:")}
        for group in sorted(used & PARAMETER_MODELS.keys()):
            parse(group, catalog.load(f"params:{group}"))
        logger.info("parameters validated: %s", ", ".join(sorted(used & PARAMETER_MODELS.keys())) or "none")
