"""The experiment template (answers -> superpixels -> targets -> EAGLE -> baselines -> evaluation -> report)."""

from eagle_pipelines.pipelines.experiment.pipeline import instantiate, template

__all__ = ["instantiate", "template"]
