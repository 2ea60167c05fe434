"""eagle_mmvp = the experiment template with a question-list loader: its one node makes both ``eval_split`` and
``eval_list`` (a prompt and a reference per question; one image may carry several questions), so the template's
own eval-list node is left out; ``pipeline_registry`` registers it.

The source is ``eagle_mmvp.source``: ``embedded`` (default) draws MMVP-style image pairs from the shapes
benchmark; ``mmvp`` reads the local MMVP copy (``mmvp_source``, checked before any node only then).
"""

from eagle_pipelines.pipelines.eagle_mmvp.nodes import prepare_questions
from eagle_pipelines.pipelines.experiment import Loader

LOADER = Loader(prepare_questions, ("params:eagle_mmvp", "params:shapes", "mmvp_source", "reference_list"),
                makes_eval_list=True)

__all__ = ["LOADER"]
