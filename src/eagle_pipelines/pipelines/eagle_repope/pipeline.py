"""eagle_repope: yes/no questions -> answers -> EAGLE on the wrong ones (counter token) -> regeneration with the
lowest-ranked regions removed -> metrics, figures, report; under the namespace ``eagle_repope``.

    question split ─► question list ─► answers ─► superpixels ─► EAGLE (counter token) ─► corrections ─┐
                                                                        metrics, coverage, figures ◄────┘─► report

The question set comes from `eagle_repope.source`: ``shapes`` (default) generates the embedded one; ``repope``
(the paper environment) reads a RePOPE list and the COCO val2014 images it asks about (``repope_source``).

Stages are node namespaces inside ``eagle_repope`` (``eagle_repope.explanation``...), built with the experiment
template's ``stage`` (pipelines/experiment), with its shared superpixel node (over the wrong answers' images) and its
publish node; the targets (the wrong answers' counter tokens) and the evaluation (correction by removal) are this
experiment's own stages. Dataset names are ``eagle_repope.<name>``: the catalog's
``"{namespace}.<name>"`` factories where they fit, conf/<env>/catalog_eagle_repope.yml for the rest.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.experiment import publish_node, stage, superpixel_node

from eagle_pipelines.pipelines.eagle_repope import report
from eagle_pipelines.pipelines.eagle_repope.nodes import (
    answer_questions,
    build_question_list,
    correct_wrong_answers,
    explain_wrong_answers,
    prepare_question_split,
    summarise,
)

NAMESPACE = "eagle_repope"
#: inputs from outside the namespace (besides parameters)
FREE_INPUTS = {"vlm", "repope_source"}


def _p(field: str) -> str:
    """One field (or sub-model) of params:eagle_repope: a node that takes only what it uses is not rerun when
    another field changes (provenance stamps parameters by value, per node input)."""
    return f"params:eagle_repope.{field}"


def stages() -> Pipeline:
    """The pipeline before namespacing (dataset names without the ``eagle_repope.`` prefix)."""
    return Pipeline([
        stage("data", [
            Node(prepare_question_split, ["params:shapes", "repope_source", _p("source"), _p("questions"),
                                          _p("question_template"), _p("max_questions")],
                 ["question_split", "pope_questions"], name="prepare_question_split"),
            Node(build_question_list, ["pope_questions", "question_split", _p("max_questions"),
                                       _p("prompt_template"), _p("prompt_suffix")],
                 "questions", name="build_question_list"),
        ]),
        stage("answers", [
            Node(answer_questions, ["vlm", "question_split", "questions", _p("answering")], "answers",
                 name="answer_questions"),
        ]),
        stage("explanation", [
            superpixel_node("question_split", select="wrong"),
            Node(explain_wrong_answers, ["vlm", "question_split", "answers", "superpixels",
                                         "params:attribution", _p("prompt_units")], "attributions",
                 name="explain_wrong_answers"),
        ]),
        stage("correction", [
            Node(correct_wrong_answers, ["vlm", "question_split", "attributions", _p("answering"),
                                         _p("correction"), "params:baselines"], "corrections",
                 name="correct_wrong_answers"),
        ]),
        stage("reporting", [
            Node(summarise, ["answers", "corrections", "params:eagle_repope"], ["metrics", "metrics_per_sample"],
                 name="summarise"),
            Node(report.coverage, ["answers", "superpixels", "attributions", "corrections"], "coverage",
                 name="coverage"),
            Node(report.build_figures, ["vlm", "question_split", "attributions", "corrections",
                                        "params:eagle_repope"], "figures", name="build_figures"),
            publish_node(report.publish_report, ["metrics", "metrics_per_sample", "coverage", "figures",
                                                 "params:eagle_repope"]),
        ]),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    inner = stages()
    params = {name for name in inner.inputs() if name.startswith("params:")}
    return Pipeline(inner, namespace=NAMESPACE, inputs=FREE_INPUTS, parameters=params)
