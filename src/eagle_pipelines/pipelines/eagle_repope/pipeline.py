"""eagle_repope: yes/no questions -> answers -> EAGLE on the wrong ones (counter token) -> regeneration with the
lowest-ranked regions removed -> metrics, figures, report.

The question set comes from `eagle_repope.source`: ``shapes`` (default) generates the embedded one; ``repope``
(the paper environment) reads a RePOPE list and the COCO val2014 images it asks about.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.eagle_repope.nodes import (
    answer_questions,
    build_question_list,
    build_report,
    correct_wrong_answers,
    explain_wrong_answers,
    prepare_question_split,
    summarise,
)

SOURCE = ["repope_images", "repope_instances"]
SETTINGS = ["params:superpixels", "params:attribution"]


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [Node(func=prepare_question_split,
                  inputs=["params:eagle_repope", "params:shapes", "repope_source"],
                  outputs=["repope_images", "repope_instances", "repope_questions"],
                  name="prepare_repope_questions_node", tags=["repope"])]
    nodes += [
        Node(func=build_question_list, inputs=["repope_questions", "repope_instances", "params:eagle_repope"],
             outputs="eagle_repope_questions", name="build_repope_question_list_node"),
        Node(func=answer_questions, inputs=["vlm", "eagle_repope_questions", *SOURCE, "params:eagle_repope"],
             outputs="eagle_repope_answers", name="answer_repope_questions_node"),
        Node(func=explain_wrong_answers, inputs=["vlm", "eagle_repope_questions", "eagle_repope_answers", *SOURCE,
                                                 *SETTINGS],
             outputs="eagle_repope_attributions", name="explain_wrong_answers_node"),
        Node(func=correct_wrong_answers, inputs=["vlm", "eagle_repope_questions", "eagle_repope_attributions",
                                                 *SOURCE, *SETTINGS, "params:eagle_repope", "params:baselines"],
             outputs="eagle_repope_corrections", name="correct_wrong_answers_node"),
        Node(func=summarise, inputs=["vlm", "eagle_repope_questions", "eagle_repope_answers",
                                     "eagle_repope_corrections", *SETTINGS, "params:eagle_repope",
                                     "params:baselines"],
             outputs=["eagle_repope_metrics", "eagle_repope_metrics_per_sample"], name="summarise_repope_node"),
        Node(func=build_report, inputs=["vlm", "eagle_repope_questions", "eagle_repope_answers",
                                        "eagle_repope_attributions", "eagle_repope_corrections",
                                        "eagle_repope_metrics", *SOURCE, *SETTINGS, "params:eagle_repope",
                                        "params:baselines"],
             outputs=["eagle_repope_fig_corrections", "eagle_repope_fig_amcr", "eagle_repope_report"],
             name="build_repope_report_node"),
    ]
    return Pipeline(nodes)
