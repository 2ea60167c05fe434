"""The experiment template: one modular pipeline for every dataset, instantiated under a namespace.

    eval split ─► eval list ─► answers ─► superpixels ─► targets ─► EAGLE ─────┐
                                                             └──► baselines ───┴► evaluation ─► tables ─► report
                                           tables + the paper's tables ─► comparison with the paper ─┘

Stages are node namespaces inside the experiment's (``eagle_coco.explanation``...), so kedro-viz collapses an
experiment into one box and each stage into another. Dataset names are ``<namespace>.<name>`` and resolve through
the catalog's factories (``"{namespace}.answers"``...). A dataset plugs in through its *loader*: the nodes that
make ``eval_split`` (and, for a list with a prompt per question, ``eval_list``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from eagle_pipelines.pipelines.experiment import nodes, report

#: the parameter groups every experiment shares (not namespaced)
SHARED_PARAMETERS = {"params:superpixels", "params:attribution", "params:baselines", "params:evaluation",
                     "params:reporting", "params:paper_comparison"}
#: datasets every experiment reads as they are (not namespaced): the model and the paper's published tables
SHARED_INPUTS = {"vlm", "paper_tables"}


def stage(name: str, stage_nodes: list[Node]) -> Pipeline:
    """A stage: its nodes under the node namespace `name` (``<experiment>.<name>`` once instantiated), datasets
    left unprefixed (the experiment's namespace prefixes them). Every experiment builds its stages with it."""
    return Pipeline(stage_nodes, namespace=name, prefix_datasets_with_namespace=False)


def superpixel_node(split: str = "eval_split", select: str = "all") -> Node:
    """The shared superpixel stage node: label maps of the answered images of `split` (``compute_superpixels``),
    of the answers `select` names (``nodes.ANSWER_SELECTIONS``; eagle_repope: ``wrong``)."""
    func = nodes.compute_superpixels if select == "all" else update_wrapper(
        partial(nodes.compute_superpixels, select=select), nodes.compute_superpixels)
    return Node(func, ["vlm", split, "answers", "params:superpixels"], "superpixels", name="compute_superpixels")


def aggregate_node(func=None) -> Node:
    """The shared end of the evaluation stage: the evaluation manifest -> the metrics table and per-sample rows."""
    return Node(func or nodes.aggregate_metrics, "evaluation", ["metrics", "metrics_per_sample"],
                name="aggregate_metrics")


def publish_node(func=None, inputs: list[str] | None = None) -> Node:
    """The shared last node: tables, coverage and drawn figures -> the published report (``report``). Publishing
    draws nothing: figures are made by the nodes before it."""
    return Node(func or report.publish_report,
                inputs or ["metrics", "metrics_per_sample", "coverage", "report_figures", "params:reporting",
                           "paper_comparison"], "report", name="publish_report")


def template(loader: Pipeline, eval_list_node: bool = True, experiment: str = "",
             prompt_units: str | None = None) -> Pipeline:
    """The stages after the dataset's `loader` (which makes ``eval_split``, and ``eval_list`` unless
    `eval_list_node`); `experiment` (the namespace) names the paper's tables the run is compared with;
    `prompt_units` (a parameter, e.g. ``params:eagle_mmvp.prompt_units``): the explain node's joint option
    (``none`` | ``words``, docs/joint.md), for a dataset whose questions drive the answer."""
    data = [*loader.nodes]
    if eval_list_node:
        data.append(Node(nodes.build_eval_list, ["eval_split", "params:experiment"], "eval_list",
                         name="build_eval_list"))
    return Pipeline([
        stage("data", data),
        stage("answers", [
            Node(nodes.generate_answers, ["vlm", "eval_split", "eval_list", "params:experiment"], "answers",
                 name="generate_answers"),
        ]),
        stage("explanation", [
            superpixel_node(),
            Node(nodes.select_targets, ["vlm", "eval_split", "answers", "params:attribution"], "targets",
                 name="select_targets"),
            Node(nodes.explain_targets, ["vlm", "eval_split", "targets", "superpixels", "params:attribution",
                                         *([prompt_units] if prompt_units else [])], "attributions",
                 name="explain"),
        ]),
        stage("baselines", [
            Node(nodes.run_baselines, ["vlm", "eval_split", "targets", "superpixels",
                                       "params:baselines"], "baselines", name="run_baselines"),
        ]),
        stage("evaluation", [
            Node(nodes.evaluate, ["vlm", "eval_split", "attributions", "baselines",
                                  "params:evaluation"], "evaluation", name="evaluate"),
            aggregate_node(),
        ]),
        stage("reporting", [
            Node(report.coverage, ["targets", "attributions", "baselines", "evaluation", "params:experiment"],
                 "coverage", name="coverage"),
            Node(report.build_figures, ["vlm", "eval_split", "attributions", "baselines", "evaluation",
                                        "params:reporting"], "figures", name="build_figures"),
            Node(update_wrapper(partial(report.compare_with_paper, experiment=experiment), report.compare_with_paper),
                 ["metrics", "vlm", "paper_tables", "params:paper_comparison"], "paper_comparison",
                 name="compare_with_paper"),
            Node(report.with_table_figure, ["figures", "metrics"], "report_figures", name="draw_table"),
            publish_node(),
        ]),
    ])


def instantiate(namespace: str, loader: Pipeline, free_inputs: set[str], experiment_params: str,
                eval_list_node: bool = True, prompt_units: str | None = None) -> Pipeline:
    """The template under `namespace`: its datasets become ``<namespace>.<name>``, except `free_inputs` (the
    model, the raw datasets the loader reads) and the shared parameter groups; ``params:experiment`` is
    `experiment_params`."""
    params = {p for p in free_inputs | ({prompt_units} if prompt_units else set()) if p.startswith("params:")}
    return Pipeline(template(loader, eval_list_node, namespace, prompt_units), namespace=namespace,
                    inputs={*SHARED_INPUTS, *(free_inputs - params)},
                    parameters={**{p: p for p in SHARED_PARAMETERS | params}, "params:experiment": experiment_params})


@dataclass(frozen=True)
class Loader:
    """A dataset's entry into the template: the node function that makes ``eval_split`` (and ``eval_list`` too
    when `makes_eval_list`: a prompt per question) from `inputs` (its raw sources and parameters, outside the
    namespace). ``pipeline_registry.TEMPLATE_EXPERIMENTS`` maps each experiment's name to its loader.
    `prompt_units`: the parameter holding the joint option of the explain node (``none`` | ``words``), for a
    dataset whose questions drive the answer (eagle_mmvp); None: image-only, the node as it always was."""

    func: Callable
    inputs: tuple[str, ...]
    makes_eval_list: bool = False
    prompt_units: str | None = None

    def pipeline(self) -> Pipeline:
        outputs = ["eval_split", "eval_list"] if self.makes_eval_list else "eval_split"
        return Pipeline([Node(self.func, list(self.inputs), outputs, name=self.func.__name__)])


def experiment(namespace: str, loader: Loader) -> Pipeline:
    """The template under `namespace` after `loader`, with the parameter group ``params:<namespace>``."""
    return instantiate(namespace, loader.pipeline(), set(loader.inputs), f"params:{namespace}",
                       eval_list_node=not loader.makes_eval_list, prompt_units=loader.prompt_units)
