"""eagle_mitigation: evidence-guided decoding measured with and without guidance, and the necessity/sufficiency
diagnostics of a few answers, under the namespace ``eagle_mitigation`` (docs/mitigation.md).

    split, questions ─► tasks (eagle_repope's question set + captions) ─► decodings (one item per guidance setting) ─► metrics ─┐
                                  └─► diagnostics (N_t, S_t per token and layer) ─► figures ───────────────┴─► report

Stages are node namespaces (``eagle_mitigation.data``, ``.decoding``, ``.diagnostics``, ``.reporting``), built with
the experiment template's ``stage`` and publish node (pipelines/experiment); its answer/explanation stages do not fit
a sweep of decoders, so decoding and diagnostics are this experiment's own stages.
Dataset names are ``eagle_mitigation.<name>``: the catalog's ``"{namespace}.<name>"`` factories where they fit
(eval_split, metrics, metrics_per_sample, coverage, figures, report), conf/<env>/catalog_eagle_mitigation.yml for
the rest.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.eagle_mitigation import report
from eagle_pipelines.pipelines.experiment import publish_node, stage
from eagle_pipelines.pipelines.eagle_mitigation.nodes import (
    coverage,
    decode_sweep,
    diagnose_answers,
    build_tasks,
    prepare_task_split,
    summarise,
)

NAMESPACE = "eagle_mitigation"
#: inputs from outside the namespace (besides parameters)
FREE_INPUTS = {"vlm"}


def _p(field: str) -> str:
    """One field of params:eagle_mitigation (a node reruns only when a field it reads changes)."""
    return f"params:eagle_mitigation.{field}"


def stages() -> Pipeline:
    return Pipeline([
        stage("data", [
            Node(prepare_task_split, ["params:shapes", _p("questions"), _p("question_template")],
                 ["eval_split", "pope_questions"], name="prepare_task_split"),
            Node(build_tasks, ["eval_split", "pope_questions", _p("caption_prompt"), _p("question_max_new_tokens"),
                               _p("caption_max_new_tokens")], "tasks", name="build_tasks"),
        ]),
        stage("decoding", [
            Node(decode_sweep, ["vlm", "eval_split", "tasks", _p("guidance"), _p("sweep"),
                                 _p("threads")],
                 "decodings", name="decode_sweep"),
        ]),
        stage("diagnostics", [
            Node(diagnose_answers, ["vlm", "eval_split", "tasks", "decodings",
                                    _p("diagnostics"), _p("threads")], "diagnostics", name="diagnose_answers"),
        ]),
        stage("reporting", [
            Node(summarise, ["tasks", "decodings", "params:shapes", _p("max_drop")],
                 ["metrics", "metrics_per_sample"], name="summarise"),
            Node(coverage, ["decodings", "diagnostics"], "coverage", name="coverage"),
            Node(report.build_figures, ["metrics", "diagnostics", "vlm", "eval_split", "decodings",
                                        _p("diagnostics")], "figures", name="build_figures"),
            publish_node(report.publish_report, ["metrics", "metrics_per_sample", "coverage", "figures", "diagnostics",
                                                 "params:eagle_mitigation"]),
        ]),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    inner = stages()
    params = {name for name in inner.inputs() if name.startswith("params:")}
    return Pipeline(inner, namespace=NAMESPACE, inputs=FREE_INPUTS, parameters=params)
