"""Evaluation that reuses and batches (issue 29): the scores a shared ``MaskBank`` gives are the scores each method
alone gets, with fewer forward passes; the run's node timings reach run.json."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.core.evaluate import MaskBank, know_record, pixel_curves, prefix_masks, region_curves, \
    score_methods
from eagle_pipelines.core.metrics import Curves
from eagle_pipelines.core.regions import RegionMap


class PixelScorer:
    """A batch-invariant TokenScorer: token t's probability is a fixed weighting of the kept pixels. Counts the
    masks it scores and the calls."""

    def __init__(self, shape=(12, 12), tokens=3, seed=0):
        rng = np.random.default_rng(seed)
        self.weights = rng.random((tokens, *shape))
        self.weights /= self.weights.sum(axis=(1, 2), keepdims=True)
        self.target_positions = tuple(range(tokens))
        self.height, self.width = shape
        self.passes = self.calls = 0

    def __call__(self, keep_masks):
        keep_masks = np.asarray(keep_masks, dtype=bool)
        self.passes += len(keep_masks)
        self.calls += 1
        # row by row: a mask's probabilities do not depend on the batch it comes in
        return np.array([[float((w * m).sum()) ** 2 for w in self.weights] for m in keep_masks]).reshape(
            len(keep_masks), len(self.weights))


def _regions(shape=(12, 12)):
    labels = (np.arange(shape[0])[:, None] // 4) * 3 + np.arange(shape[1])[None, :] // 4
    return RegionMap(labels.astype(np.int32), {})


def _maps(seed=1, shape=(12, 12)):
    rng = np.random.default_rng(seed)
    smooth = rng.random(shape).astype(np.float32)
    flat = np.zeros(shape, dtype=np.float32)  # every pixel tied: raster order
    return {"a": (smooth, None), "b": (smooth.copy(), None), "flat": (flat, None)}


def test_bank_scores_each_distinct_mask_once_and_gives_the_scorers_values():
    scorer = PixelScorer()
    bank = MaskBank(scorer)
    rng = np.random.default_rng(3)
    masks = rng.random((5, 12, 12)) < 0.5
    twice = np.concatenate([masks, masks[::-1], np.ones((2, 12, 12), bool)])
    got = bank(twice)
    np.testing.assert_array_equal(got, PixelScorer()(twice))
    assert scorer.passes == 6 and bank.forward_passes == 6  # 5 masks and the full image, each once
    again = bank(masks)
    np.testing.assert_array_equal(again, got[:5])
    assert scorer.passes == 6 and bank.reused == 5


def test_gathering_scores_all_methods_in_one_call_with_unchanged_metrics():
    steps, regions = 8, _regions()
    maps = _maps()
    order = np.random.default_rng(0).permutation(regions.n_regions)
    alone = PixelScorer()
    expected = score_methods(alone, maps, steps)
    expected_random = region_curves(alone, regions, order)
    fresh_passes = alone.passes
    assert fresh_passes == 3 * 2 * steps + 2 * regions.n_regions

    scorer = PixelScorer()
    bank = MaskBank(scorer)
    with bank.gathering():
        score_methods(bank, maps, steps)
        region_curves(bank, regions, order)
    assert scorer.calls == 0
    bank.flush()
    assert scorer.calls == 1
    rows = score_methods(bank, maps, steps)
    random = region_curves(bank, regions, order)
    assert scorer.calls == 1  # everything was gathered
    for got, want in zip(rows, expected):
        for key in ("insertion_auc", "deletion_auc", "highest_confidence", "insertion_auc_sensitive",
                    "n_sensitive_tokens"):
            assert got[key] == want[key]  # exactly: the same probabilities
        assert got["curve"] == want["curve"]
    np.testing.assert_array_equal(random.insertion, expected_random.insertion)
    np.testing.assert_array_equal(random.deletion, expected_random.deletion)
    # a and b rank the pixels the same: scored once; the full and the black image once for all methods
    distinct = {m.tobytes() for m in prefix_masks(regions, order)}
    for saliency, _ in maps.values():
        from eagle_pipelines.core.metrics import pixel_order_masks

        masks = pixel_order_masks(saliency, steps)[0]
        distinct |= {m.tobytes() for m in np.concatenate([masks, ~masks])}
    assert bank.forward_passes == scorer.passes == len(distinct)
    assert bank.forward_passes <= fresh_passes - 2 * steps - 4


def test_a_search_record_costs_no_pass_and_equals_fresh_curves():
    regions = _regions()
    order = np.random.default_rng(5).permutation(regions.n_regions)
    fresh = region_curves(PixelScorer(), regions, order)
    scorer = PixelScorer()
    bank = MaskBank(scorer)
    know_record(bank, regions, order, fresh.insertion, fresh.deletion)
    again = region_curves(bank, regions, order)
    assert scorer.passes == 0
    np.testing.assert_array_equal(again.insertion, fresh.insertion)
    # the full and the black image come from the record for a pixel map too
    saliency = np.random.default_rng(6).random((12, 12))
    curves = pixel_curves(bank, saliency, 4)
    assert scorer.passes == 2 * 4 - 2
    np.testing.assert_array_equal(curves.insertion, pixel_curves(PixelScorer(), saliency, 4).insertion)


def test_know_refuses_mismatched_rows():
    with pytest.raises(ValueError, match="3 masks but 2 rows"):
        MaskBank(PixelScorer()).know(np.ones((3, 12, 12), bool), np.zeros((2, 3)))


def test_bank_curves_match_a_records_curves_object():
    regions = _regions()
    order = np.arange(regions.n_regions)
    curves = region_curves(PixelScorer(), regions, order)
    assert isinstance(curves, Curves) and curves.insertion.shape == (regions.n_regions, 3)


# --- on the shipped model: what the bank relies on --------------------------------------------------------------
def test_the_shipped_models_scores_do_not_depend_on_the_batch(shipped_model, eval_split):
    """A mask's probabilities are the same alone, in a batch of others and in another batch size: what lets the
    evaluation score every method's masks together with unchanged metrics."""
    image = next(iter(eval_split.images.values()))
    answer = shipped_model.generate_batch([image], "Describe the image.", max_new_tokens=6)[0]
    positions = list(range(len(answer.token_ids)))
    masks = np.random.default_rng(0).random((12, *image.shape[:2])) < 0.5
    batched = shipped_model.scorer(image, "Describe the image.", answer.token_ids, positions, batch_size=12)(masks)
    small = shipped_model.scorer(image, "Describe the image.", answer.token_ids, positions, batch_size=5)(masks)
    alone = np.concatenate([shipped_model.scorer(image, "Describe the image.", answer.token_ids, positions,
                                           batch_size=1)(m[None]) for m in masks[:3]])
    np.testing.assert_array_equal(batched, small)
    np.testing.assert_array_equal(batched[:3], alone)


def test_the_bank_on_the_shipped_model_gives_each_methods_fresh_metrics(shipped_model, eval_split):
    image = next(iter(eval_split.images.values()))
    answer = shipped_model.generate_batch([image], "Describe the image.", max_new_tokens=6)[0]
    positions = list(range(len(answer.token_ids)))
    maps = _maps(seed=2, shape=image.shape[:2])
    fresh = {}
    passes = 0
    for name, entry in maps.items():  # one scorer per method, as the evaluation did before the bank
        scorer = shipped_model.scorer(image, "Describe the image.", answer.token_ids, positions, batch_size=64)
        fresh[name] = score_methods(scorer, {name: entry}, 4)[0]
        passes += 2 * 4
    bank = MaskBank(shipped_model.scorer(image, "Describe the image.", answer.token_ids, positions, batch_size=64))
    with bank.gathering():
        score_methods(bank, maps, 4)
    bank.flush()
    shared = {row["method"]: row for row in score_methods(bank, maps, 4)}
    for name, row in fresh.items():
        assert {k: v for k, v in shared[name].items() if k != "eval_seconds"} == \
               {k: v for k, v in row.items() if k != "eval_seconds"}
    # a and b agree (their 8 masks once), the full and black images once for all three
    from eagle_pipelines.core.metrics import pixel_order_masks

    distinct = set()
    for saliency, _ in maps.values():
        masks = pixel_order_masks(saliency, 4)[0]
        distinct |= {m.tobytes() for m in np.concatenate([masks, ~masks])}
    assert bank.forward_passes == len(distinct) <= passes - 8 - 2 and passes == 24  # b: 8, flat: full + black


# --- timings ------------------------------------------------------------------------------------------------------
def test_node_timings_reach_the_published_run_json():
    from types import SimpleNamespace

    from eagle_pipelines.timings import NodeTimingHook, node_timings, share

    hook = NodeTimingHook()
    hook.before_pipeline_run()
    assert node_timings() == {}
    for name in ("eagle_coco.explanation.explain", "eagle_coco.evaluation.evaluate"):
        node = SimpleNamespace(name=name)
        hook.before_node_run(node)
        hook.after_node_run(node, {"out": 1})
    before = node_timings()
    assert list(before) == ["eagle_coco.explanation.explain", "eagle_coco.evaluation.evaluate"]
    assert all(s >= 0 for s in before.values())
    report = SimpleNamespace(name="eagle_coco.reporting.publish_report")
    hook.before_node_run(report)
    bundle = {"run.json": {"timings": dict(before)}, "report.html": "<html>"}
    hook.after_node_run(report, {"eagle_coco.report": bundle})
    assert list(bundle["run.json"]["timings"]) == [*before, "eagle_coco.reporting.publish_report"]
    timings = {"a.evaluation.evaluate": 1.0, "a.evaluation.aggregate_metrics": 1.0, "a.explanation.explain": 2.0}
    assert share(timings, "evaluat") == 0.5 and share({}, "evaluat") == 0.0
    hook.before_pipeline_run()  # a new run starts empty
    assert node_timings() == {}


def test_a_producers_seconds_include_the_saving_that_makes_its_items():
    """A producer returns its jobs and they run while its manifest is saved: its seconds end at that save."""
    import time
    from types import SimpleNamespace

    from eagle_pipelines.timings import NodeTimingHook, node_timings

    hook = NodeTimingHook()
    hook.before_pipeline_run()
    node = SimpleNamespace(name="eagle_coco.evaluation.evaluate")
    hook.before_node_run(node)
    hook.after_node_run(node, {"eagle_coco.evaluation": object()})
    returned = node_timings()[node.name]
    time.sleep(0.2)  # the manifest's dataset runs the jobs
    hook.after_dataset_saved("eagle_coco.evaluation", node)
    assert node_timings()[node.name] >= returned + 0.2
    other = SimpleNamespace(name="never_started")
    hook.after_dataset_saved("x", other)  # a save of a node the hook did not see changes nothing
    assert "never_started" not in node_timings()


def test_the_report_shows_the_timings():
    from eagle_pipelines.pipelines.experiment.report import timings_section

    html = timings_section({"eagle_coco.explanation.explain": 3.0, "eagle_coco.evaluation.evaluate": 1.0})
    assert "Where the time went" in html and "eagle_coco.evaluation.evaluate" in html and "0.2500" in html
    assert timings_section({}) == ""


class _PlannedScorer:
    """A scorer with a memory plan keyed by its image size (what ``ScorerSetup`` reads), counting adoptions."""

    def __init__(self, key, batch_size=256):
        self.plan_key, self.batch_size, self.memory_plan, self.adopted = key, batch_size, {}, []
        self.shared = False

    def adopt_plan(self, plan):
        self.adopted.append(plan)
        self.batch_size = min(self.batch_size, plan["batch_size"])

    def share_patches(self):
        self.shared = True
        return True


def test_scorer_setup_shares_one_plan_per_kind_and_turns_patch_sharing_on():
    from eagle_pipelines.core.evaluate import ScorerSetup

    setup = ScorerSetup()
    first = setup.prepare(_PlannedScorer((112, 112)))
    assert first.adopted == [] and first.shared  # nothing to adopt yet; patch sharing on
    setup.keep(first)  # no plan measured (e.g. memory planning off): nothing filed
    first.memory_plan = {"batch_size": 96, "per_image_mb": 2.0}
    setup.keep(first)
    second, other = setup.prepare(_PlannedScorer((112, 112))), setup.prepare(_PlannedScorer((84, 112)))
    assert second.adopted == [{"batch_size": 96, "per_image_mb": 2.0}] and second.batch_size == 96
    assert other.adopted == []  # another kind plans on its own
    unkeyed = _PlannedScorer(None)
    unkeyed.memory_plan = {"batch_size": 8}
    setup.keep(unkeyed)
    assert setup.prepare(_PlannedScorer(None)).adopted == []  # no key: never shared
    assert (setup.plans_measured, setup.plans_adopted) == (1, 1)
