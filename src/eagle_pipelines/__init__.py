"""eagle_pipelines: EAGLE attributions for multimodal LLMs, as Kedro pipelines.

``explain`` and ``load_model`` are the notebook API (see ``eagle_pipelines.explain``)."""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("explain", "load_model"):
        from eagle_pipelines import api as module

        return getattr(module, name)
    raise AttributeError(name)
