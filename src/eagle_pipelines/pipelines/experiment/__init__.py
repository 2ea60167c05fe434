"""The experiment template (answers -> superpixels -> targets -> EAGLE -> baselines -> evaluation -> report) and its
stage builders, which every experiment (eagle_coco, eagle_mmvp, eagle_repope, eagle_video, eagle_mitigation) uses."""

from eagle_pipelines.pipelines.experiment.pipeline import (
    Loader,
    aggregate_node,
    experiment,
    instantiate,
    publish_node,
    stage,
    superpixel_node,
    template,
)

__all__ = ["Loader", "aggregate_node", "experiment", "instantiate", "publish_node", "stage", "superpixel_node", "template"]
