"""eagle_coco = the experiment template under the namespace ``eagle_coco`` with the COCO-format loader."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.eagle_coco.nodes import prepare_eval_split
from eagle_pipelines.pipelines.experiment import instantiate

LOADER_INPUTS = ["params:eval_data", "params:shapes", "coco_val2017", "reference_list", "word_reference_list"]


def create_pipeline(**kwargs) -> Pipeline:
    loader = Pipeline([Node(prepare_eval_split, LOADER_INPUTS, "eval_split", name="prepare_eval_split")])
    return instantiate("eagle_coco", loader, set(LOADER_INPUTS), "params:eagle_coco")
