"""eagle_video: EAGLE on clips with a known cause (the embedded shapes clips), beside the random floor."""

from eagle_pipelines.pipelines.eagle_video.pipeline import create_pipeline

__all__ = ["create_pipeline"]
