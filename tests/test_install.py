"""The package's dependencies (docs/install.md).

- the core API (``eagle_pipelines``, ``explain``/``load_model``, ``eagle-explain``) imports nothing of the
  ``pipelines`` extra (Kedro, kedro-datasets, kedro-viz, mlflow, pycocotools, captum, PyAV...);
- a module of a missing extra is a one-line error naming the extra to install;
- the ranges of pyproject.toml admit the exact versions of constraints.txt;
- slow: the core install alone, into a fresh venv, with the newest versions the package index serves inside the
  ranges (not the lock's; torch 2.13.0, the CPU wheel on this disk, as constraints.txt has it), runs
  ``eagle-explain`` with the shipped model. The versions it ran are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

from eagle_pipelines.extras import EXTRA_OF, MissingExtraError, require

from tests.conftest import SHIPPED_MODEL

ROOT = Path(__file__).parents[1]
#: top-level modules that the core API must not import: they come with extras
EXTRA_MODULES = sorted(EXTRA_OF)
CORE_IMPORTS = """
import sys
import eagle_pipelines
from eagle_pipelines import explain, load_model
import eagle_pipelines.api, eagle_pipelines.explain_cli, eagle_pipelines.models.checkpoint
eagle_pipelines.api.check_arguments("Describe the image.", "pooled", 16)
print(sorted({m.split(".")[0] for m in sys.modules}))
"""


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_core_api_imports_nothing_of_the_extras():
    out = subprocess.run([sys.executable, "-c", CORE_IMPORTS], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    loaded = set(json.loads(out.strip().replace("'", '"')))
    assert "eagle_pipelines" in loaded and "torch" in loaded
    assert loaded.isdisjoint(EXTRA_MODULES), sorted(loaded & set(EXTRA_MODULES))


def test_a_missing_extra_is_one_line_naming_it():
    with pytest.raises(MissingExtraError, match=r'^COCO masks needs no_such_module_xyz, which is not installed: '
                                                r'pip install "eagle_pipelines\[all\]"'):
        require("no_such_module_xyz", "COCO masks")
    exc = MissingExtraError("x")
    assert isinstance(exc, ImportError)  # `except ImportError` still catches it
    from eagle_pipelines.extras import missing_extra

    message = str(missing_extra(ModuleNotFoundError("No module named 'kedro'", name="kedro"), "kedro run"))
    assert message.startswith("kedro run needs kedro") and '"eagle_pipelines[pipelines]"' in message
    assert "\n" not in message


def test_the_ranges_admit_the_locked_versions():
    project = _pyproject()["project"]
    pins = _constraints()
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra if not r.startswith("eagle_pipelines")]
    for req in requirements:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in constraints.txt"
        assert req.specifier.contains(pins[name]), f"{req} does not admit the locked {name}=={pins[name]}"
        assert any(s.operator == "<" for s in req.specifier), f"{req}: no upper bound"
    assert project["requires-python"] == ">=3.11"
    core = {r.name.lower() for r in (Requirement(d) for d in project["dependencies"])}
    assert core.isdisjoint({"kedro", "kedro-datasets", "kedro-viz", "mlflow", "kedro-mlflow", "pycocotools",
                            "captum", "av"})


@pytest.mark.slow
def test_core_install_in_a_fresh_venv_explains_with_newest_allowed_versions(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python, bin_dir = env_dir / "bin/python", env_dir / "bin"
    # only torch is held (the CPU wheel on disk, as in constraints.txt): everything else is the newest in range
    held = tmp_path / "torch.txt"
    held.write_text(f"torch=={_constraints()['torch']}\n")
    environ = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    environ.pop("PYTHONPATH", None)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-c", held, str(ROOT)], check=True, env=environ,
                   timeout=900)
    installed = dict(line.split("==") for line in subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True,
        env=environ).stdout.split())
    names = {n.lower().replace("_", "-") for n in installed}
    print(f"\ncore install: {len(installed)} distributions;",
          ", ".join(f"{n}=={installed[n]}" for n in sorted(installed) if n.lower() in (
              "torch", "transformers", "tokenizers", "numpy", "pillow", "scikit-image", "pydantic", "pandas",
              "matplotlib", "accelerate", "safetensors", "huggingface-hub", "scipy")))
    assert names.isdisjoint({"kedro", "kedro-datasets", "kedro-viz", "mlflow", "pycocotools", "captum", "av"})
    pins = _constraints()
    newer = sorted(n for n in names if n in pins and installed_version(installed, n) != pins[n])
    print("versions other than the lock's:", ", ".join(f"{n}=={installed_version(installed, n)} (lock {pins[n]})"
                                                         for n in newer))

    image = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((56, 56, 3)) * 255).astype(np.uint8)).save(image)
    args = [str(image), "--model", str(SHIPPED_MODEL), "--regions", "8", "--max-new-tokens", "4", "--no-plot", "--out"]
    run = subprocess.run([bin_dir / "eagle-explain", *args, tmp_path / "out"], capture_output=True, text=True,
                         cwd=tmp_path, env=environ, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "insertion AUC" in run.stdout
    # the same explanation with the lock's versions (this interpreter): the same answer, regions and ranking
    lock = subprocess.run([sys.executable, "-m", "eagle_pipelines.explain_cli", *args, tmp_path / "lock"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**environ, "PYTHONPATH": str(ROOT / "src")})
    assert lock.returncode == 0, lock.stderr[-2000:]
    from eagle_pipelines.core.attribution import Attribution

    fresh, locked = (Attribution.load(tmp_path / name / "photo.png.npz") for name in ("out", "lock"))
    assert fresh.answer and fresh.answer == locked.answer
    assert len(np.unique(fresh.labels)) == len(fresh.order) >= 2
    np.testing.assert_array_equal(fresh.labels, locked.labels)
    np.testing.assert_array_equal(fresh.order, locked.order)
    np.testing.assert_allclose(fresh.insertion, locked.insertion, atol=1e-4)

    # the Kedro project is an extra: one line naming it, no traceback
    missing = subprocess.run([bin_dir / "eagle-pipelines"], capture_output=True, text=True, env=environ,
                             cwd=tmp_path)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        'eagle-pipelines: eagle-pipelines (the Kedro project) needs kedro, which is not installed: '
        'pip install "eagle_pipelines[pipelines]" (docs/install.md)']


def installed_version(installed: dict[str, str], name: str) -> str:
    for key, version in installed.items():
        if key.lower().replace("_", "-") == name:
            return version.split("+")[0]
    raise KeyError(name)
