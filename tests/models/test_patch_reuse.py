"""The evaluation's scorer options (issue 29): patch-embedding reuse gives the same bits with fewer patches
embedded, and a memory plan adopted from another scorer of the same kind skips the probe passes."""

from __future__ import annotations

import numpy as np
import torch

from eagle_pipelines.core.metrics import pixel_order_masks
from eagle_pipelines.core.regions import slico


def _masks(image, rng):
    """Masks of every kind the evaluation scores: region sets, pixel-protocol steps (whole and cut patches), noise,
    the full and the black image."""
    regions = slico(image, 16)
    saliency = rng.random(image.shape[:2]).astype(np.float32)
    steps, _ = pixel_order_masks(saliency, 8)
    ranked, _ = pixel_order_masks(regions.labels.astype(np.float32), 8)
    h, w = image.shape[:2]
    return np.concatenate([regions.masks(rng.random((6, regions.n_regions)) < 0.5), steps, ~steps, ranked, ~ranked,
                           rng.random((3, h, w)) < 0.5, np.ones((1, h, w), bool), np.zeros((1, h, w), bool)])


def test_shared_patches_give_the_same_bits_and_embed_only_the_cut_patches(shipped_model):
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 60, (84, 112, 3), dtype=np.uint8)
    photo[20:60, 30:80] = (220, 40, 40)
    image = shipped_model.model_image(photo)
    answer = shipped_model.generate(image, "Describe the image.", max_new_tokens=6)
    targets = list(range(len(answer.token_ids)))
    masks = _masks(image, rng)
    plain = shipped_model.scorer(image, "Describe the image.", answer.token_ids, targets, batch_size=64)
    shared = shipped_model.scorer(image, "Describe the image.", answer.token_ids, targets, batch_size=64,
                                  memory_budget_mb=0)  # no probe passes: the count below is the scoring alone
    assert shared.share_patches() and not plain._reuse

    conv = shared._patch_embed.proj  # the embedding's own arithmetic, before the assembled rows stand in
    rows = []
    handle = conv.register_forward_hook(lambda module, args, output: rows.append(len(output)))
    try:
        got = shared(masks)
    finally:
        handle.remove()
    np.testing.assert_array_equal(got, plain(masks))  # bit for bit
    # by hand: a patch is embedded when the mask cuts it (keeps some of its pixels, not all), once per pass for
    # each distinct cut (the same patch with the same pixels kept), plus the one-row stand-in per pass; whole
    # patches come from the full and black images' embeddings
    n, pixels, size = len(shared.index), shared._pixels_np, shared.batch_size

    def cuts(chunk):
        kept = chunk.reshape(len(chunk), -1)[:, pixels]
        return [(p, kept[i, p].tobytes()) for i, p in zip(*np.nonzero(kept.any(-1) & ~kept.all(-1)))]

    chunks = [masks[lo:lo + size] for lo in range(0, len(masks), size)]
    distinct = sum(len(set(cuts(c))) for c in chunks)
    assert sum(rows) == distinct + len(chunks) < sum(len(cuts(c)) for c in chunks) < len(masks) * n
    # another chunking, the same bits
    shared.batch_size = 5
    np.testing.assert_array_equal(shared(masks), got)


def test_shared_patches_hand_the_vision_tower_its_geometry(shipped_model, monkeypatch):
    """The vision tower's position ids, window order and bounds come precomputed (once per batch size), not made
    again by the tower in each pass; the same bits as the plain scorer."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as modeling

    seen = []  # (helper, whether the pass handed it its result)
    keys = {"get_vision_window_index": "window_index", "get_vision_position_ids": "position_ids",
            "get_vision_attention_seqlens": "cu_seqlens"}

    def spy(name, original):
        def helper(*args, kwargs=None, **rest):
            seen.append((name, keys[name] in (kwargs or {})))
            return original(*args, kwargs=kwargs, **rest)
        return helper

    for name in keys:
        monkeypatch.setattr(modeling, name, spy(name, getattr(modeling, name)))
    rng = np.random.default_rng(6)
    image = shipped_model.model_image(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    masks = rng.random((7, 112, 112)) < 0.5
    plain = shipped_model.scorer(image, "Describe the image.", [4, 15, 13], [0, 1, 2], batch_size=4,
                                 memory_budget_mb=0)
    expected = plain(masks)
    assert sorted(seen) == sorted([(name, False) for name in keys] * 2)  # the tower makes them in each pass
    shared = shipped_model.scorer(image, "Describe the image.", [4, 15, 13], [0, 1, 2], batch_size=4,
                                  memory_budget_mb=0)
    assert shared.share_patches()
    seen.clear()
    np.testing.assert_array_equal(shared(masks), expected)
    assert sorted(seen) == sorted([(name, True) for name in keys] * 2)
    # made once per image grid for every scorer of this image size and every batch size up to 64
    from eagle_pipelines.models.qwen_vl import _geometry_for

    _geometry_for.cache_clear()
    other = shipped_model.scorer(image[::-1].copy(), "Describe the image.", [4, 15], [0, 1], batch_size=4,
                                 memory_budget_mb=0)
    assert other.share_patches()
    other(masks)
    shared(masks)
    info = _geometry_for.cache_info()
    assert (info.misses, info.hits) == (1, 4)  # made when `other` starts sharing; its 2 passes and shared's 2


def test_the_vision_geometry_is_the_helpers_for_every_batch_size():
    """A prefix of the geometry made for many images is transformers' own for fewer, for grids with one window
    and with several (the window of 112 pixels: 4x4 merged tokens), padded windows included."""
    import torch
    from transformers import vision_utils

    from eagle_pipelines.models.qwen_vl import vision_geometry

    for grid in ((1, 8, 8), (1, 12, 20), (1, 16, 16), (2, 6, 10)):
        for b in (1, 2, 3, 7, 64, 65, 130):
            got = vision_geometry(grid, b, 2, 112, 14, "cpu")
            grid_thw = torch.tensor([grid] * b)
            window_index, cu_window = vision_utils.get_vision_window_index(grid_thw, spatial_merge_size=2,
                                                                           window_size=112, patch_size=14)
            want = {"image_position_ids": vision_utils.get_vision_position_ids(grid_thw, 2),
                    "image_cu_seqlens": vision_utils.get_vision_cu_seqlens(grid_thw),
                    "image_window_index": window_index, "image_cu_window_seqlens": cu_window}
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), (grid, b, key)


def test_an_adopted_plan_skips_the_probe_passes(shipped_model):
    from eagle_pipelines.core.evaluate import ScorerSetup

    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    setup = ScorerSetup()
    first = setup.prepare(shipped_model.scorer(image, "Describe the image.", [4, 15, 13], [0, 1, 2], batch_size=64,
                                               memory_budget_mb=10**6))
    masks = rng.random((6, 112, 112)) < 0.5
    first(masks)
    assert first.memory_plan["batch_size"] == 64
    setup.keep(first)
    second = setup.prepare(shipped_model.scorer(image[::-1].copy(), "Describe the image.", [4, 15, 13], [0, 1, 2],
                                                batch_size=64, memory_budget_mb=10**6))
    assert second.planned and second.memory_plan == first.memory_plan
    calls = []
    original = second._forward
    second._forward = lambda chunk: calls.append(len(chunk)) or original(chunk)
    second(masks)
    assert calls == [6]  # no probes of 1 and 2 masks
    other = setup.prepare(shipped_model.scorer(image, "Describe the image.", [4, 15], [0, 1], batch_size=64))
    assert not other.planned  # another answer length: another kind, planned on its own
    assert (setup.plans_measured, setup.plans_adopted) == (1, 1)
    with torch.no_grad():
        assert second.adopt_plan({"batch_size": 500}) is None and second.batch_size == 64  # never above its own


def test_packed_attention_is_the_per_image_attention_bit_for_bit():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from eagle_pipelines.models.qwen_vl import packed_sdpa

    module = torch.nn.Module()
    g = torch.Generator().manual_seed(0)
    for lengths in ([16, 16, 16], [12, 20, 7]):  # one length: one batched call; several: image by image
        q, k, v = (torch.randn(1, 4, sum(lengths), 8, generator=g) for _ in range(3))
        cu = torch.tensor([0, *np.cumsum(lengths)])
        got, _ = packed_sdpa(module, q, k, v, None, cu_seq_lens_q=cu, cu_seq_lens_k=cu, scaling=8 ** -0.5,
                             dropout=0.0, is_causal=False)
        per_image = torch.cat([sdpa_attention_forward(module, a, b, c, None, scaling=8 ** -0.5, is_causal=False)[0]
                               for a, b, c in zip(*(torch.split(t, lengths, dim=2) for t in (q, k, v)))], dim=1)
        assert got.shape == (1, sum(lengths), 4, 8)
        assert torch.equal(got, per_image)


def test_the_search_shares_patches_with_the_same_order_and_curves(shipped_model, monkeypatch):
    """explain() turns the patch sharing on for its scorer; the order and both curves are the same bits as a
    search whose scorer embeds every patch."""
    from eagle_pipelines.api import explain
    from eagle_pipelines.models.qwen_vl import QwenVLTokenScorer

    rng = np.random.default_rng(7)
    photo = rng.integers(0, 40, (112, 112, 3), dtype=np.uint8)
    photo[30:70, 20:60] = (230, 210, 40)
    image = shipped_model.model_image(photo)
    regions = slico(image, 16)
    turned_on = []
    share = QwenVLTokenScorer.share_patches
    monkeypatch.setattr(QwenVLTokenScorer, "share_patches", lambda self: turned_on.append(share(self)) or True)
    shared = explain(shipped_model, image, "Describe the image.", regions=regions, strategy="pooled")
    assert turned_on == [True]
    monkeypatch.setattr(QwenVLTokenScorer, "share_patches", lambda self: False)
    plain = explain(shipped_model, image, "Describe the image.", regions=regions, strategy="pooled")
    np.testing.assert_array_equal(shared.order, plain.order)
    np.testing.assert_array_equal(shared.insertion, plain.insertion)
    np.testing.assert_array_equal(shared.deletion, plain.deletion)
    assert shared.forward_passes == plain.forward_passes


def test_a_large_call_runs_as_two_halves_on_two_threads_with_the_same_bits(shipped_model):
    """On a CPU with two torch threads, a call of ``parallel_min`` masks or more is scored as two halves at once
    (each on its own thread with one torch thread, chunks of half the batch); the same bits as the plain scorer on
    one thread pool, and the torch thread count is back afterwards."""
    import threading

    rng = np.random.default_rng(8)
    image = shipped_model.model_image(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    masks = _masks(image, rng)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        plain = shipped_model.scorer(image, "Describe the image.", [4, 15, 13], [0, 1, 2], batch_size=16,
                                     memory_budget_mb=0)
        expected = plain(masks)
        shared = shipped_model.scorer(image, "Describe the image.", [4, 15, 13], [0, 1, 2], batch_size=16,
                                      memory_budget_mb=0)
        assert shared.share_patches()
        shared.parallel_min = 32
        assert len(masks) >= 32
        seen = []
        original = shared._forward
        shared._forward = lambda chunk: seen.append((threading.get_ident(), len(chunk), torch.get_num_threads())) \
            or original(chunk)
        got = shared(masks)
        assert torch.get_num_threads() == 2
        shared.parallel_min = len(masks) + 1  # below it: the one-pool path, chunks of the whole batch
        again = shared(masks)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(again, expected)
    parallel = [s for s in seen if s[0] != threading.get_ident()]
    assert len({t for t, _, _ in parallel}) == 2  # two threads of its own
    assert {n for _, _, n in parallel} == {1}  # one torch thread each
    assert max(c for _, c, _ in parallel) == 8 and sum(c for _, c, _ in parallel) == len(masks)
    assert [c for t, c, _ in seen if t == threading.get_ident()] == [16] * (len(masks) // 16) + \
        ([len(masks) % 16] if len(masks) % 16 else [])

