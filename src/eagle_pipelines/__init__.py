"""eagle_pipelines: EAGLE attributions for multimodal LLMs, as Kedro pipelines."""

__version__ = "0.1.0"
