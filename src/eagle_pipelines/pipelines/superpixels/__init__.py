"""SLICO label maps per image, cached by image id and SLIC parameters."""

from eagle_pipelines.pipelines.superpixels.pipeline import create_pipeline

__all__ = ["create_pipeline"]
