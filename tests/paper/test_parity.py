"""Protocol points of the `paper` environment that no other test file holds (docs/paper.md#parity): the report's
headline under the region protocol for EAGLE, and masking the photo before the processor (`compose: processor`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eagle_pipelines.pipelines.experiment.report import headline

def _metrics() -> pd.DataFrame:
    rows = []
    for method, protocol, ins in [("eagle", "regions", 0.70), ("eagle", "pixels", 0.60), ("random", "regions", 0.40),
                                  ("random", "pixels", 0.45), ("llava_cam", "pixels", 0.50)]:
        rows.append({"method": method, "level": "sentence", "protocol": protocol, "n_samples": 3,
                     "insertion_auc": ins, "deletion_auc": 0.3})
    return pd.DataFrame(rows)


def test_the_paper_headline_scores_eagle_under_its_regions_and_the_baselines_under_pixels():
    paper = headline(_metrics(), "regions")
    assert list(zip(paper.method, paper.protocol, paper.insertion_auc)) == [
        ("eagle", "regions", 0.70), ("llava_cam", "pixels", 0.50), ("random", "regions", 0.40)]
    base = headline(_metrics())
    assert list(zip(base.method, base.insertion_auc)) == [("eagle", 0.60), ("llava_cam", 0.50), ("random", 0.45)]
    assert "protocol" not in base.columns


def test_compose_processor_explains_on_the_photo_and_masks_it_before_the_processor(eval_split, shipped_model):
    """The reference masks the original image and lets the processor resize each masked copy: the attribution's
    label map is then at the photo's resolution, and each masked copy's pixel values are the processor's own."""
    from PIL import Image

    from eagle_pipelines.api import explain

    vlm = shipped_model
    photo = np.asarray(Image.fromarray(eval_split.images["eval_000001.png"]).resize((150, 140)))
    seen = vlm.model_image(photo)
    assert seen.shape[:2] != photo.shape[:2]  # the processor resizes this photo
    answer = vlm.generate(seen, "Describe the image.", max_new_tokens=6)
    kwargs = dict(n_regions=4, strategy="greedy", answer=answer, memory_budget_mb=0)
    on_photo = explain(vlm, photo, "Describe the image.", compose="processor", **kwargs)
    on_model = explain(vlm, photo, "Describe the image.", **kwargs)
    assert on_photo.labels.shape == photo.shape[:2] and on_model.labels.shape == seen.shape[:2]
    assert on_photo.meta["regions"]["n_segments"] == 4
    # the masked copies are the processor's: keep-mask of the photo's first region, through the processor
    scorer = vlm.scorer(photo, "Describe the image.", answer.token_ids, [0], compose="processor", memory_budget_mb=0)
    keep = on_photo.labels == on_photo.order[0]
    expected = vlm.encode([photo * keep[..., None].astype(np.uint8)], "Describe the image.")["pixel_values"]
    np.testing.assert_array_equal(scorer.pixel_values(keep[None]).numpy(), expected.numpy())
    # the full photo's probabilities are those the model gives the processed photo
    full = scorer(np.ones((1, *photo.shape[:2]), dtype=bool))[0]
    np.testing.assert_allclose(on_photo.full_score[:1], full, atol=1e-6)
