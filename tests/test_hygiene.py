"""Project hygiene: the configuration and the registered pipelines agree.

- every parameter group of conf/base/parameters*.yml, and of conf/paper/ merged over it (soft merge, as
  settings.CONFIG_LOADER_ARGS says), validates against its pydantic model (eagle_pipelines.parameters), and every
  group has a model or is listed in FREE_PARAMETER_GROUPS;
- no parameter group is unused: each is read by a node of a registered pipeline as ``params:<group>``;
- no catalog entry is unused: each entry, and each dataset factory, names a dataset of a registered pipeline
  (factories are matched the way the catalog matches them, an explicit entry taking precedence);
- every free input of a registered pipeline is declared: a catalog entry, a factory, or an existing parameter;
- kedro-viz: every catalog entry of conf/base/ and conf/paper/ has a layer, and the layers follow the data flow
  (kedro-viz draws no layer at all when a layer's dataset feeds, directly or not, one of an earlier layer); the
  bands kedro-viz draws come in Kedro's order (raw above intermediate above ... reporting); no node reads the item
  store it fills (a producer outputs its manifest, whose entry names the store), so no store is drawn as a source;
- no node takes more than six inputs (bundle settings in a parameter sub-model instead);
- no pipeline imports another's modules: the experiments share only the template (pipelines/experiment).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest
import yaml

from eagle_pipelines.parameters import HOOK_PARAMETER_GROUPS, PARAMETER_MODELS, parse

ROOT = Path(__file__).parents[1]
ENVS = ["base", "paper"]
#: top-level parameter groups deliberately without a pydantic model (read as plain dicts); none today
FREE_PARAMETER_GROUPS: frozenset[str] = frozenset()


# --- what the project declares ------------------------------------------------------------------------------------
@functools.cache
def _config(env: str) -> tuple[dict, dict]:
    """The parameters and the catalog configuration of `env` (``base`` alone, or ``paper`` over ``base``), loaded
    with the project's own config loader settings."""
    from kedro.config import OmegaConfigLoader

    from eagle_pipelines import settings

    loader_class = getattr(settings, "CONFIG_LOADER_CLASS", OmegaConfigLoader)
    loader = loader_class(conf_source=str(ROOT / "conf"), env=env, runtime_params={}, **settings.CONFIG_LOADER_ARGS)
    catalog = {name: entry for name, entry in loader["catalog"].items() if not name.startswith("_")}
    return loader["parameters"], catalog


@functools.cache
def _resolver(env: str):
    """The catalog's own pattern matching (kedro.io.CatalogConfigResolver) over `env`'s configuration."""
    from kedro.io.catalog_config_resolver import DEFAULT_RUNTIME_PATTERN, CatalogConfigResolver

    return CatalogConfigResolver(config=_config(env)[1], default_runtime_patterns=DEFAULT_RUNTIME_PATTERN)


@functools.cache
def _pipelines() -> dict:
    from eagle_pipelines.pipeline_registry import register_pipelines

    return register_pipelines()


def _is_parameter(name: str) -> bool:
    return name == "parameters" or name.startswith("params:")


def _datasets() -> set[str]:
    """Every dataset a registered pipeline reads or writes (transcoding stripped), parameters excluded."""
    names = set()
    for pipeline in _pipelines().values():
        for node in pipeline.nodes:
            names |= {n.split("@")[0] for n in (*node.inputs, *node.outputs) if not _is_parameter(n)}
    return names


def _entry_of(env: str, name: str) -> str | None:
    """The catalog entry or factory pattern that declares dataset `name` in `env`, or None (a MemoryDataset)."""
    if name in _config(env)[1]:
        return name
    resolver = _resolver(env)
    return resolver.match_dataset_pattern(name) or resolver.match_user_catch_all_pattern(name)


def _layer(env: str, name: str) -> str | None:
    entry = _entry_of(env, name)
    if entry is None:
        return None
    config = _resolver(env).resolve_pattern(name) if entry != name else _config(env)[1][name]
    return ((config.get("metadata") or {}).get("kedro-viz") or {}).get("layer")


def _catalog_files() -> list[Path]:
    return sorted(p for env in ENVS for p in (ROOT / "conf" / env).glob("catalog*.yml"))


# --- parameters ---------------------------------------------------------------------------------------------------
def _leaves(value, prefix: str = ""):
    """(dotted name, value) of every leaf of a nested dict."""
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _lookup(value, dotted: str):
    for key in dotted.split(".") if dotted else []:
        value = value[key]
    return value


def _attribute(model, dotted: str):
    value = model
    for key in dotted.split("."):
        value = value[key] if isinstance(value, dict) else getattr(value, key)
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("env", ENVS)
def test_every_parameter_group_validates_against_its_model(env):
    parameters, _ = _config(env)
    checked = []
    for group, value in parameters.items():
        if group not in PARAMETER_MODELS:
            continue
        model = parse(group, value)
        assert isinstance(model, PARAMETER_MODELS[group])
        # what the file sets is what the model holds (no value silently replaced by a default or coerced)
        dumped = model.model_dump(mode="json")
        for dotted, set_value in _leaves(value):
            try:
                held = _lookup(dumped, dotted)
            except KeyError:  # a parity switch at its base value is left out of the dump (core/parity.py)
                held = _attribute(model, dotted)
            expected = list(set_value) if isinstance(set_value, tuple) else set_value
            assert held == expected, f"{group}.{dotted}: the file sets {set_value!r}, the model holds {held!r}"
        checked.append(group)
    assert {"shapes", "eagle_coco", "attribution", "baselines", "evaluation"} <= set(checked)


@pytest.mark.parametrize("env", ENVS)
def test_every_parameter_group_has_a_model_or_is_listed_free(env):
    groups = set(_config(env)[0])
    unknown = groups - set(PARAMETER_MODELS) - FREE_PARAMETER_GROUPS
    assert not unknown, (f"parameter groups without a pydantic model: {sorted(unknown)}: add one to "
                         "eagle_pipelines.parameters.PARAMETER_MODELS, or list the group in FREE_PARAMETER_GROUPS")
    assert not FREE_PARAMETER_GROUPS & set(PARAMETER_MODELS), "a group listed free has a model"
    assert FREE_PARAMETER_GROUPS <= groups, f"listed free but not configured: {sorted(FREE_PARAMETER_GROUPS - groups)}"
    unconfigured = set(PARAMETER_MODELS) - groups
    assert not unconfigured, f"models without a parameter group in conf/{env}: {sorted(unconfigured)}"


@pytest.mark.parametrize("env", ENVS)
def test_no_unused_parameters(env):
    read = set()
    for name, pipeline in _pipelines().items():
        for node in pipeline.nodes:
            assert "parameters" not in node.inputs, f"{name}: node {node.name} reads every parameter"
            read |= {i.split(":", 1)[1].split(".")[0] for i in node.inputs if i.startswith("params:")}
    unused = set(_config(env)[0]) - read - HOOK_PARAMETER_GROUPS  # read by a hook (compute: the executor)
    assert not unused, f"parameter groups no registered pipeline's node reads: {sorted(unused)}"
    assert {"toy_model", "shapes", "mmvp", "eagle_coco"} <= read


# --- the catalog --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ENVS)
def test_no_unused_catalog_entries(env):
    _, catalog = _config(env)
    resolver = _resolver(env)
    datasets = _datasets()
    entries = {name for name in catalog if not resolver.is_pattern(name)}
    unused_entries = entries - datasets
    matched = {resolver.match_dataset_pattern(name) for name in datasets - entries} - {None}
    unused_patterns = {name for name in catalog if resolver.is_pattern(name)} - matched
    assert not (unused_entries or unused_patterns), (
        f"catalog entries no registered pipeline uses: {sorted(unused_entries)}; dataset factories no registered "
        f"pipeline's dataset matches: {sorted(unused_patterns)}")


@pytest.mark.parametrize("env", ENVS)
def test_every_free_input_is_declared(env):
    parameters, _ = _config(env)
    undeclared = defaultdict(list)
    for name, pipeline in _pipelines().items():
        for free in sorted(pipeline.inputs()):
            if free.startswith("params:"):
                try:
                    _lookup(parameters, free.split(":", 1)[1])
                except (KeyError, TypeError):
                    undeclared[name].append(f"{free} (no such parameter)")
            elif free != "parameters" and _entry_of(env, free.split("@")[0]) is None:
                undeclared[name].append(free)
    assert not undeclared, f"free inputs neither in the catalog nor parameters: {dict(undeclared)}"


@pytest.mark.parametrize("file", _catalog_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_catalog_entry_has_a_layer(file):
    entries = yaml.safe_load(file.read_text()) or {}
    missing = [name for name, entry in entries.items() if not name.startswith("_")
               and not ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")]
    assert not missing, f"{file.relative_to(ROOT)}: entries without metadata: {{kedro-viz: {{layer: ...}}}}: {missing}"


def _flow(env: str, pipeline) -> tuple[dict[str, set[str]], dict[str, str | None]]:
    """A pipeline's data flow (dataset -> the datasets a node makes from it, transcoding suffixes dropped) and the
    kedro-viz layer of each dataset in it (None: unlayered; parameters left out)."""
    children = defaultdict(set)
    for node in pipeline.nodes:
        for source in node.inputs:
            children[source.split("@")[0]] |= {o.split("@")[0] for o in node.outputs}
    layer = {d: _layer(env, d) for d in {*children, *(c for cs in children.values() for c in cs)}
             if not _is_parameter(d)}
    return children, layer


@pytest.mark.parametrize("env", ENVS)
def test_layers_follow_the_data_flow(env):
    """kedro-viz orders layers by the flow: a layer's datasets may feed only its own or later layers, through any
    number of nodes and unlayered datasets (kedro_viz.services.layers.sort_layers; a cycle hides every layer)."""
    cycles = []
    for name, pipeline in _pipelines().items():
        children, layer = _flow(env, pipeline)

        def downstream(start: str) -> dict[str, str]:
            """Each layer reached from `start`, with the first dataset of that layer found."""
            seen, stack, reached = {start}, [start], {}
            while stack:
                for child in children[stack.pop()] - seen:
                    seen.add(child)
                    stack.append(child)
                    if layer.get(child):
                        reached.setdefault(layer[child], child)
            return reached

        after = defaultdict(set)  # layer -> the layers whose datasets feed it
        example = {}
        for dataset, own in layer.items():
            if own:
                for later, reached in downstream(dataset).items():
                    if later != own:
                        after[later].add(own)
                        example.setdefault((own, later), f"{dataset} ({own}) -> {reached} ({later})")
        try:
            list(TopologicalSorter(after).static_order())
        except CycleError as error:
            both_ways = sorted(f"{example[(a, b)]} but {example[(b, a)]}" for (a, b) in example
                               if (b, a) in example and a < b)
            cycles.append(f"pipeline {name!r}: {' -> '.join(error.args[1])}: " + "; ".join(both_ways))
    assert not cycles, f"conf/{env}: the layers form a cycle, so kedro-viz shows none:\n" + "\n".join(cycles)


#: Kedro's layer convention, the order kedro-viz's bands must come in from top to bottom
LAYER_ORDER = ["raw", "intermediate", "primary", "feature", "model_input", "models", "model_output", "reporting"]


@pytest.mark.parametrize("env", ENVS)
def test_every_band_feeds_only_later_bands_in_kedros_order(env):
    """Every layer a band's datasets feed (through any number of nodes and unlayered datasets) comes after it in
    Kedro's order (raw, intermediate, ..., reporting), so kedro-viz draws the flow top to bottom in that order.
    Bands that no path joins (the shipped model, a source, beside raw) are placed by kedro-viz at will; a store
    that is a node input used to be such a source (the "intermediate" band above "raw")."""
    wrong = []
    for name, pipeline in _pipelines().items():
        children, layer = _flow(env, pipeline)
        assert {v for v in layer.values() if v} <= set(LAYER_ORDER), f"conf/{env}: a layer outside {LAYER_ORDER}"
        for dataset, own in layer.items():
            seen, stack = {dataset}, [dataset]
            while own and stack:
                for child in children[stack.pop()] - seen:
                    seen.add(child)
                    stack.append(child)
                    later = layer.get(child)
                    if later and LAYER_ORDER.index(later) < LAYER_ORDER.index(own):
                        wrong.append(f"pipeline {name!r}: {dataset} ({own}) feeds {child} ({later})")
    assert not wrong, f"conf/{env}: bands out of Kedro's order:\n" + "\n".join(sorted(set(wrong)))


def _locations(env: str, name: str) -> tuple[set[str], set[str]]:
    """Where dataset `name` lives (its path or filepath) and the item store it names (``store.path``), as the
    catalog resolves them in `env`."""
    entry = _entry_of(env, name)
    if entry is None:
        return set(), set()
    config = _resolver(env).resolve_pattern(name) if entry != name else _config(env)[1][name]
    own = {str(config[k]) for k in ("path", "filepath") if config.get(k)}
    store = {str(config["store"]["path"])} if isinstance(config.get("store"), dict) else set()
    return own, store


@pytest.mark.parametrize("env", ENVS)
def test_no_node_reads_the_store_it_fills(env):
    """A producer's output is its manifest, whose catalog entry names the item store it fills: the store is never a
    node input (kedro-viz would draw data flowing out of it), and no input of a node is a place its outputs write."""
    found = []
    for name, pipeline in _pipelines().items():
        for node in pipeline.nodes:
            inputs = [i.split("@")[0] for i in node.inputs if not _is_parameter(i)]
            written = set()
            for out in node.outputs:
                own, store = _locations(env, out.split("@")[0])
                written |= own | store
            for i in inputs:
                if "ItemStore" in str((_config(env)[1].get(_entry_of(env, i) or "") or {}).get("type", "")):
                    found.append(f"{name}: {node.name} reads the item store {i!r} as a dataset")
                if _locations(env, i)[0] & written:
                    found.append(f"{name}: {node.name} reads {i!r}, which its own outputs write")
    assert not found, f"conf/{env}: " + "\n".join(sorted(set(found)))


def test_no_node_takes_more_than_six_inputs():
    """Six inputs at most (parameters included): a node that needs more takes a parameter sub-model or is split."""
    wide = sorted({f"{node.name}: {len(node.inputs)} inputs ({', '.join(node.inputs)})"
                   for pipeline in _pipelines().values() for node in pipeline.nodes if len(node.inputs) > 6})
    assert not wide, "nodes over six inputs:\n" + "\n".join(wide)


def test_no_pipeline_imports_another_pipelines_modules():
    """Each pipeline package imports only itself and the template (``pipelines/experiment``: the shared stages);
    what two experiments share lives in the template, core/ or data/."""
    import ast

    root = ROOT / "src/eagle_pipelines/pipelines"
    found = []
    for package in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
        allowed = {package.name, "experiment"}
        for module in sorted(package.glob("*.py")):
            for node in ast.walk(ast.parse(module.read_text())):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                         [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                for name in names:
                    parts = name.split(".")
                    if parts[:2] == ["eagle_pipelines", "pipelines"] and len(parts) > 2 and parts[2] not in allowed:
                        found.append(f"{module.relative_to(ROOT)} imports {name}")
    assert not found, "pipelines importing another pipeline's modules:\n" + "\n".join(found)


# --- the paper environment's model presets (conf/paper/globals.yml) ---------------------------------------------
def test_every_paper_model_preset_makes_a_valid_model_entry():
    from kedro.config import OmegaConfigLoader
    from kedro.io.core import AbstractDataset

    from eagle_pipelines import settings

    presets = yaml.safe_load((ROOT / "conf/paper/globals.yml").read_text())["paper_models"]
    assert "qwen2_5_vl_3b" in presets  # the default of conf/paper/catalog.yml
    for preset, fields in presets.items():
        assert ("hub_id" in fields) != ("path" in fields), f"{preset}: give either hub_id or path"
        assert {"family", "dtype", "hint"} <= set(fields), preset
        loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env="paper", runtime_params={"model": preset},
                                   **settings.CONFIG_LOADER_ARGS)
        dataset = AbstractDataset.from_config("vlm", loader["catalog"]["vlm"])  # checks the family, loads nothing
        described = dataset._describe()
        assert described.get("hub_id") == fields.get("hub_id") and described.get("path") == fields.get("path")
