"""The vLLM scoring backend's settings that need no vLLM: the timing sets and the environment of vLLM's processes."""

from __future__ import annotations

import numpy as np

from eagle_pipelines.models.vllm_backend import timing_sets
from eagle_pipelines.deploy.vllm_server import vllm_environment


def test_every_timing_set_holds_copies_no_other_set_holds():
    masks = np.random.default_rng(0).random((16, 12, 10)) > 0.5
    sets = timing_sets(masks, 4)
    assert len(sets) == 4 and np.array_equal(sets[0], masks)  # the first is the masks themselves (their probs)
    seen = [{m.tobytes() for m in s} for s in sets]
    for a in range(4):
        assert all(s.shape == masks.shape and s.flags.c_contiguous for s in sets)
        for b in range(a + 1, 4):
            assert not seen[a] & seen[b]
    # the same masked area, mirrored
    assert [int(s.sum()) for s in sets] == [int(masks.sum())] * 4
    assert len(timing_sets(masks, 0)) == 1


def test_vllm_processes_run_one_openmp_thread_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert vllm_environment(tmp_path)["OMP_NUM_THREADS"] == "1"
    assert vllm_environment(tmp_path, threads=4)["OMP_NUM_THREADS"] == "4"
    assert vllm_environment(tmp_path, threads=None)["OMP_NUM_THREADS"] == "7"  # vLLM's (the caller's) choice
    env = vllm_environment(tmp_path, pythonpath="/src")
    assert env["PYTHONPATH"] == "/src" and env["HF_HUB_OFFLINE"] == "1"
