"""Project hooks: checks that run before any node, so that a run fails at start with a message that names the
wrong parameter or the missing input and how to fix it."""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl
from kedro.io.core import DatasetError

from eagle_pipelines.errors import UserError
from eagle_pipelines.parameters import PARAMETER_MODELS, ParameterError, parse

logger = logging.getLogger(__name__)
#: --params keys that select catalog entries (conf/paper/catalog.yml), not parameter groups
RUNTIME_ONLY = {"bucket", "model", "coco_root", "mmvp_root", "device", "dtype", "reference_list", "reference_lists",
                "repope_list", "api_base", "api_model"}


class MissingInputError(UserError, DatasetError):
    """A dataset or checkpoint the run needs is not there; the message names each path and how to obtain it."""


def _group(name: str) -> str | None:
    """The parameter group of a node input (``params:attribution`` -> ``attribution``), if it has a model."""
    if not name.startswith("params:"):
        return None
    group = name.split(":", 1)[1]
    return group if group in PARAMETER_MODELS else None


def _cross_check(parsed: dict) -> None:
    """What one group's model cannot see alone: the regions asked for must fit the image they are drawn on, where
    its size is a parameter (the embedded shapes images; explain() checks the same per image: engine.max_regions)."""
    from eagle_pipelines.engine import MIN_REGION_PIXELS
    from eagle_pipelines.data.coco_sample import EvalDataParams

    regions, shapes = parsed.get("superpixels"), parsed.get("shapes")
    if regions is None or shapes is None or parsed.get("eval_data", EvalDataParams()).source != "shapes":
        return
    size = shapes.image_size
    limit = size * size // MIN_REGION_PIXELS
    if regions.n_segments > limit:
        raise ParameterError(
            f"superpixels.n_segments = {regions.n_segments} is more than a {size}x{size} shapes image "
            f"(shapes.image_size) can hold: at most {limit}, one region per {MIN_REGION_PIXELS} pixels; lower it "
            f"(conf/<env>/parameters_superpixels.yml or --params superpixels.n_segments=...)")


class ParameterValidationHook:
    """Validates every parameter group the pipeline reads before any node runs, refuses parameter groups nobody
    knows (a typo such as ``--params atribution.strategy=greedy`` would otherwise change nothing), and hands
    every node its parameter groups as validated pydantic models."""

    def __init__(self):
        self._parsed: dict = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        """Before the catalog is built (where Kedro would raise its own, longer message): unknown groups in
        conf/ or --params are refused, and every group is validated with its dotted names."""
        import difflib

        raw = context.config_loader["parameters"] or {}
        runtime = getattr(context, "_runtime_params", None) or {}
        known = set(PARAMETER_MODELS)  # every group in conf/ has a model (tests/test_hygiene.py)
        unknown = sorted((set(runtime) | set(raw)) - known - RUNTIME_ONLY)
        if unknown:
            hints = [f"'{u}'" + (f" (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(u, known, 1))
                                 else "") for u in unknown]
            where = "--params" if set(unknown) & set(runtime) else "conf/"
            raise ParameterError(f"Unknown parameter group {', '.join(hints)} in {where}; the groups are: "
                                 f"{', '.join(sorted(known))}")
        parsed = {group: parse(group, raw[group]) for group in sorted(set(raw) & known)}
        _cross_check(parsed)

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        used = sorted({g for name in pipeline.inputs() if (g := _group(name))})
        self._parsed = {f"params:{group}": parse(group, catalog.load(f"params:{group}")) for group in used}
        logger.info("parameters validated: %s", ", ".join(used) or "none")

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id):
        typed = {}
        for name in node.inputs:
            group = _group(name)
            if group:
                typed[name] = self._parsed.get(name) or parse(group, inputs[name])
        return typed or None


class ComputeHook:
    """Sets where the run's per-item jobs are computed (``params:compute``: in this process, or on Ray workers;
    io/executors.py) before the first node, and stops the workers after the run, whether it finished or failed.
    Nodes do not read the group: where an item is made changes nothing in it."""

    @hook_impl
    def before_pipeline_run(self, catalog) -> None:
        from eagle_pipelines.io import executors

        try:
            raw = catalog.load("params:compute")
        except DatasetError:  # a configuration without the group: the default
            raw = {}
        params = parse("compute", raw)
        executors.configure(params)
        if params.executor != "sequential":
            ray = params.ray
            logger.info("per-item jobs run on Ray (address %s, %d workers, %g GPUs each)", ray.address, ray.workers,
                        ray.gpus_per_worker)

    @hook_impl
    def after_pipeline_run(self) -> None:
        from eagle_pipelines.io import executors

        executors.reset()

    @hook_impl
    def on_pipeline_error(self) -> None:
        from eagle_pipelines.io import executors

        executors.reset()


def _parameter(catalog, dotted: str):
    """The value of parameter `dotted` (``eval_data.source``), defaults of its pydantic model included."""
    group, *keys = dotted.split(".")
    value = catalog.load(f"params:{group}")
    if group in PARAMETER_MODELS:
        value = parse(group, value).model_dump()
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _needed(dataset, catalog) -> bool:
    """An input is needed unless its catalog entry says when: ``metadata: {needed_when: {eval_data.source: coco}}``
    (a value or a list of values per dotted parameter; all must hold), or ``{not: <value or list>}`` for any value
    but those (``{eval_data.coco.reference_lists: {not: null}}``: when a folder is named)."""
    conditions = (getattr(dataset, "metadata", None) or {}).get("needed_when") or {}
    for dotted, expected in conditions.items():
        if isinstance(expected, dict) and set(expected) == {"not"}:
            barred = expected["not"] if isinstance(expected["not"], list) else [expected["not"]]
            if _parameter(catalog, dotted) in barred:
                return False
            continue
        allowed = expected if isinstance(expected, list) else [expected]
        if _parameter(catalog, dotted) not in allowed:
            return False
    return True


def missing_input(name: str, dataset) -> str | None:
    """Why the input `name` cannot be read (the expected path and how to obtain it), or None when it is there.
    Only inputs that say how to obtain them are checked: model checkpoints, COCO-format folders, datasets with a
    ``problem()`` method (one line, or None) and datasets with a ``metadata: {missing_hint: ...}``."""
    from eagle_pipelines.io.coco_dataset import CocoFolderDataset
    from eagle_pipelines.io.model_dataset import VisionLanguageModelDataset

    if isinstance(dataset, CocoFolderDataset):
        problems = dataset.missing()
        return f"'{name}': {dataset.missing_message(problems)}" if problems else None
    if isinstance(dataset, VisionLanguageModelDataset):
        described = dataset._describe()
        if dataset.exists():
            return _device_problem(name, described.get("device"), getattr(dataset, "_device_map", None))
        hint = getattr(dataset, "_missing_hint", None) or "See docs/paper.md for how to obtain it."
        if described.get("path"):
            where = f"no model checkpoint (a folder with config.json) at '{described['path']}'"
        else:
            from huggingface_hub import constants

            where = (f"'{described['hub_id']}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}; "
                     f"set HF_HUB_CACHE to use another)")
        return f"'{name}': {where} (nothing is downloaded). {hint}"
    problem = getattr(dataset, "problem", None)
    if callable(problem):  # a dataset that checks its own file (io/paper_tables_dataset.py)
        found = problem()
        return f"'{name}': {found}" if found else None
    hint = (getattr(dataset, "metadata", None) or {}).get("missing_hint")
    if hint and not dataset.exists():
        described = dataset._describe()
        path = described.get("filepath") or described.get("path") or name
        return f"'{name}': nothing at '{path}'. {hint}"
    return None


def _device_problem(name: str, device: str | None, device_map: str | None) -> str | None:
    """A model configured for a CUDA device on a machine where torch sees none."""
    if device_map or not str(device or "cpu").startswith("cuda"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (f"'{name}': the model is configured for device '{device}', but torch sees no CUDA device here "
            f"(torch {torch.__version__}). Run on a machine with an NVIDIA GPU and a CUDA build of torch "
            f"(docs/paper.md, 'Step 3: the GPU').")


class InputCheckHook:
    """Stops a run whose inputs (datasets the user supplies, model checkpoints) are missing, before any node.

    Checked: the pipeline's free inputs that are model checkpoints, COCO-format folders or carry a
    ``metadata: {missing_hint: ...}``; an entry with ``metadata: {needed_when: {<group.key>: <value>}}`` only when
    its parameters say it is read (e.g. COCO only when ``eval_data.source`` is ``coco``)."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        problems = []
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters":
                continue
            dataset = catalog.get(name)
            if dataset is None or not _needed(dataset, catalog):
                continue
            problem = missing_input(name, dataset)
            if problem:
                problems.append(problem)
        if len(problems) == 1:  # one line: the input, its path and how to obtain it
            raise MissingInputError(f"This run needs an input that is not there (nothing was run): {problems[0]}")
        if problems:
            raise MissingInputError("This run needs inputs that are not there (nothing was run):\n"
                                    + "\n".join(f"  - {p}" for p in problems))
