"""eagle_coco: captions explained at sentence and word level (the experiment template on a COCO-format split).
Its loader (``nodes.prepare_eval_split``) is all it adds to the template; ``pipeline_registry`` registers it."""

from eagle_pipelines.pipelines.eagle_coco.nodes import prepare_eval_split
from eagle_pipelines.pipelines.experiment import Loader

LOADER = Loader(prepare_eval_split,
                ("params:eval_data", "params:shapes", "coco_val2017", "reference_list", "word_reference_list"))

__all__ = ["LOADER"]
