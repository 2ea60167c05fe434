"""Peak memory of a block of work: CUDA allocator peak on a GPU, the process's peak resident set on a CPU.

On Linux the CPU peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs, so each block measures its own
peak; where that is not possible the process-wide peak (ru_maxrss) is reported."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def _read_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb``."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        hwm = _read_hwm_mb()
        if hwm is None:
            scale = 1 if sys.platform == "darwin" else 1024
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024
        self.mb = float(hwm)
