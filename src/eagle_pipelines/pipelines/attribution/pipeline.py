"""eagle_coco's attribution steps: the evaluation list, the model's answers, EAGLE at sentence and word level."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.attribution.nodes import (
    build_eval_list,
    explain_sentences,
    explain_words,
    generate_answers,
)

EXPLAIN_INPUTS = ["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances", "eagle_coco_answers",
                  "eagle_coco_superpixels", "params:superpixels", "params:attribution"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(
            func=build_eval_list,
            inputs=["eval_instances", "eval_captions", "params:eagle_coco"],
            outputs="eagle_coco_eval_list",
            name="build_eval_list_node",
        ),
        Node(
            func=generate_answers,
            inputs=["vlm", "eagle_coco_eval_list", "eval_images", "eval_instances", "params:eagle_coco"],
            outputs="eagle_coco_answers",
            name="generate_answers_node",
        ),
        Node(func=explain_sentences, inputs=EXPLAIN_INPUTS, outputs="eagle_coco_sentence_attributions",
             name="explain_sentences_node"),
        Node(func=explain_words, inputs=EXPLAIN_INPUTS, outputs="eagle_coco_word_attributions",
             name="explain_words_node"),
    ])
