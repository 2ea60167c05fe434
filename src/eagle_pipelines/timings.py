"""Where a run's time goes: each node's wall seconds, recorded by a hook and published in run.json (``timings``:
node name -> seconds) and in the report.

``NodeTimingHook`` times every node from ``before_node_run`` (its inputs loaded) to the last
``after_dataset_saved`` of its outputs: a producer node returns its jobs (``PendingItems``) and they run while its
manifest is saved, so the work of explain, baselines and evaluate is in the saving. ``node_timings()`` is what the run has recorded so far: the report
node reads it (every other node of an experiment runs before it), and when a node returns a published bundle (a
dict with a ``run.json`` that has ``timings``), the hook adds that node's own seconds to it before it is saved.
"""

from __future__ import annotations

import threading
import time

from kedro.framework.hooks import hook_impl

_LOCK = threading.Lock()
_STARTS: dict[str, float] = {}
_SAVING: dict[str, float] = {}  # node name -> start, for the nodes whose outputs are being saved
_TIMINGS: dict[str, float] = {}


def node_timings() -> dict[str, float]:
    """Node name -> wall seconds of the nodes of the current run that have finished (empty outside a run)."""
    with _LOCK:
        return dict(_TIMINGS)


def share(timings: dict[str, float], word: str) -> float:
    """The fraction of the summed seconds spent in the nodes whose name contains `word` (0 when nothing ran)."""
    total = sum(timings.values())
    return sum(s for name, s in timings.items() if word in name) / total if total else 0.0


class NodeTimingHook:
    """Records each node's wall seconds for ``node_timings()``; cleared when a pipeline run starts."""

    @hook_impl
    def before_pipeline_run(self) -> None:
        with _LOCK:
            _STARTS.clear()
            _SAVING.clear()
            _TIMINGS.clear()

    @hook_impl
    def before_node_run(self, node) -> None:
        with _LOCK:
            _STARTS[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node, outputs) -> None:
        with _LOCK:
            start = _STARTS.pop(node.name, None)
            if start is None:
                return
            _SAVING[node.name] = start
            _TIMINGS[node.name] = round(time.perf_counter() - start, 3)
            timings = dict(_TIMINGS)
        for value in (outputs or {}).values():
            run = value.get("run.json") if isinstance(value, dict) else None
            if isinstance(run, dict) and isinstance(run.get("timings"), dict):
                run["timings"] = timings  # the publishing node's own seconds too

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node) -> None:
        """A node's seconds run until its last output is saved (a manifest's saving makes its items)."""
        with _LOCK:
            start = _SAVING.get(getattr(node, "name", None))
            if start is not None:
                _TIMINGS[node.name] = round(time.perf_counter() - start, 3)
