"""Evidence-guided decoding against the co-occurrence hallucination, with necessity/sufficiency diagnostics."""

from eagle_pipelines.pipelines.eagle_mitigation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
