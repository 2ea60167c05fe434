"""Hallucination diagnosis on RePOPE-style yes/no questions (embedded default; RePOPE with --env=paper)."""

from eagle_pipelines.pipelines.eagle_repope.pipeline import create_pipeline

__all__ = ["create_pipeline"]
