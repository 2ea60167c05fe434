"""Which optional install provides a module, and its lazy import.

The core install (``pip install eagle_pipelines``) is what ``explain()``, ``load_model()`` and ``eagle-explain``
need; the Kedro project and the rest come with extras (``pip install "eagle_pipelines[pipelines]"``,
docs/install.md). A module of a missing extra raises ``MissingExtraError``: one line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from eagle_pipelines.errors import UserError

#: top-level module -> the extra that installs it
EXTRA_OF = {
    "kedro": "pipelines", "kedro_datasets": "pipelines", "kedro_viz": "pipelines", "kedro_mlflow": "pipelines",
    "mlflow": "pipelines", "pycocotools": "pipelines", "captum": "pipelines", "av": "video",
    "ray": "ray", "cv2": "opencv", "openai": "api",
}


class MissingExtraError(UserError, ImportError):
    """A module of an extra that is not installed (an ImportError too, so ``except ImportError`` still works)."""


def missing_extra(exc: ImportError, what: str = "") -> MissingExtraError:
    """The one-line error for `exc`, a failed import of a module of an extra."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(module, "all")
    need = f"{what} needs" if what else "this needs"
    return MissingExtraError(f"{need} {module or 'a module'}, which is not installed: "
                             f"pip install \"eagle_pipelines[{extra}]\" (docs/install.md)")


def require(name: str, what: str = "") -> ModuleType:
    """Imports module `name`; a missing one is a ``MissingExtraError`` naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != name.split(".")[0]:
            raise  # the module is there but something it imports failed: not a missing extra
        raise missing_extra(exc, what) from None


class LazyModule:
    """A module imported on first attribute access (``mask_utils = LazyModule("pycocotools.mask")``), so that
    importing the module that holds it does not need the extra."""

    def __init__(self, name: str, what: str = ""):
        self._name, self._what, self._module = name, what, None

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._module is None:
            self._module = require(self._name, self._what)
        return getattr(self._module, attr)
