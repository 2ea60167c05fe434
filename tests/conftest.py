"""Shared fixtures: small shapes splits, a tiny random-weight Qwen2.5-VL with its offline processor, the shipped
embedded model (one path, one session fixture) and copies of the project for Kedro runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).parents[1]
#: where the catalog reads the embedded model, relative to a project's root (conf/base/catalog.yml: vlm)
MODEL_DIR = "data/06_models/toy_qwen2_5_vl"
#: the shipped embedded model (`make train` makes it): tests read it, none writes to it
SHIPPED_MODEL = ROOT / MODEL_DIR
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 230), "yellow": (230, 210, 40)}


@pytest.fixture(scope="session")
def shapes_params():
    from eagle_pipelines.data.params import ShapesParams

    return ShapesParams(colours=COLOURS, splits={"train": 300, "val": 20, "eval": 20},
                        cooccurrence={"anchor": "red circle", "companion": "blue square", "rate": 0.9})


@pytest.fixture(scope="session")
def eval_split(shapes_params):
    from eagle_pipelines.data.shapes import generate_split

    return generate_split(shapes_params, "eval")


@pytest.fixture(scope="session")
def tiny_processor(eval_split, shapes_params):
    from eagle_pipelines.models.processing import build_processor
    from eagle_pipelines.models.toy import ToyModelParams, vocabulary_texts

    caps = [a["caption"] for a in eval_split.captions["annotations"]]
    cats = [c["name"] for c in eval_split.instances["categories"]]
    return build_processor(vocabulary_texts(caps, cats, ToyModelParams()), shapes_params.image_size)


@pytest.fixture(scope="session")
def tiny_model(tiny_processor):
    from eagle_pipelines.models.toy import ToyArchitecture, build_toy_model

    arch = ToyArchitecture(vision_depth=2, vision_hidden=32, vision_intermediate=64, vision_heads=2, text_layers=1,
                           text_hidden=32, text_intermediate=64, text_heads=2, text_kv_heads=1)
    return build_toy_model(tiny_processor, arch, seed=0)


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped embedded model (SHIPPED_MODEL), loaded once per session through the public API (``load_model``).
    Every test shares this one object: use it, never change it (its weights, processor or attributes)."""
    from eagle_pipelines.api import load_model

    return load_model(str(SHIPPED_MODEL))


@pytest.fixture(autouse=True)
def fast_tests_on_one_torch_thread(request):
    """Every test not marked slow runs torch on one thread (the count before restored after it). The models of the
    fast tests are tiny: a second thread adds little on an idle machine and, while other processes share the cores,
    its spin-waiting costs many times the work (4 word-level explanations of the shipped model: 3.5-4 CPU seconds
    on one thread, 44-59 on two, the same orders). Slow tests (pipeline runs) keep the threads they are given."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``), the count
    before restored after it: many small forward passes of a tiny model run faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def link_shipped_model(project: Path) -> Path:
    """The shipped model linked where `project`'s catalog reads the model (MODEL_DIR); returns that path."""
    (project / MODEL_DIR).parent.mkdir(parents=True, exist_ok=True)
    (project / MODEL_DIR).symlink_to(SHIPPED_MODEL)
    return project / MODEL_DIR


def copy_project(folder: Path, shipped_model: bool = False) -> Path:
    """A copy of the project's configuration in `folder`, so that Kedro runs write under folder/data (the package
    itself is installed); `shipped_model`: with the shipped model linked where the catalog looks for it."""
    from kedro.framework.startup import bootstrap_project

    shutil.copytree(ROOT / "conf", folder / "conf", ignore=shutil.ignore_patterns("local"))
    (folder / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    (folder / ".telemetry").write_text("consent: false\n")
    (folder / "src").mkdir()
    if shipped_model:
        link_shipped_model(folder)
    bootstrap_project(folder)
    return folder


@pytest.fixture
def project(tmp_path):
    """A copy of the project's configuration in a fresh folder (``copy_project``)."""
    return copy_project(tmp_path)
