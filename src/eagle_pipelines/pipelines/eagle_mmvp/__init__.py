"""eagle_mmvp = the experiment template with a question-list loader: its one node makes both ``eval_split`` and
``eval_list`` (a prompt and a reference per question; one image may carry several questions), so the template's
own eval-list node is left out; ``pipeline_registry`` registers it.

The source is ``eagle_mmvp.source``: ``embedded`` (default) draws MMVP-style image pairs from the shapes
benchmark; ``mmvp`` reads the local MMVP copy (``mmvp_source``, checked before any node only then).
``eagle_mmvp.prompt_units: words`` explains each answer over the image's regions and its question's words
(docs/joint.md): the explain node takes that field.
"""

from eagle_pipelines.pipelines.eagle_mmvp.nodes import prepare_questions
from eagle_pipelines.pipelines.experiment import Loader

LOADER = Loader(prepare_questions, ("params:eagle_mmvp", "params:shapes", "mmvp_source", "reference_list"),
                makes_eval_list=True, prompt_units="params:eagle_mmvp.prompt_units")

__all__ = ["LOADER"]
