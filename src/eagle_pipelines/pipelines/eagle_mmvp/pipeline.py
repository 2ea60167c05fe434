"""eagle_mmvp = the experiment template under the namespace ``eagle_mmvp`` with a question-list loader: its one
node makes both ``eval_split`` and ``eval_list`` (a prompt and a reference per question; one image may carry
several questions), so the template's own eval-list node is left out.

The source is ``eagle_mmvp.source``: ``embedded`` (default) draws MMVP-style image pairs from the shapes
benchmark; ``mmvp`` reads the local MMVP copy (``mmvp_source``, checked before any node only then).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.eagle_mmvp.nodes import prepare_questions
from eagle_pipelines.pipelines.experiment import instantiate

LOADER_INPUTS = ["params:eagle_mmvp", "params:shapes", "mmvp_source", "reference_list"]


def create_pipeline(**kwargs) -> Pipeline:
    loader = Pipeline([Node(prepare_questions, LOADER_INPUTS, ["eval_split", "eval_list"], name="prepare_questions")])
    return instantiate("eagle_mmvp", loader, set(LOADER_INPUTS), "params:eagle_mmvp", eval_list_node=False)
