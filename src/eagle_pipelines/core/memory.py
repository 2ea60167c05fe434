"""Peak memory of a block of work: CUDA allocator peak on a GPU, the process's peak resident set on a CPU
(``PeakMemory``), and the peak of the bytes held by the tensors a block creates, on any device (``TensorPeak``:
what the batch planner uses on a CPU, where the resident set does not grow with memory the allocator reuses).

On Linux the CPU peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs, so each block measures its own
peak; where that is not possible the process-wide peak (ru_maxrss) is reported."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


def status_mb(field: str, pid: int | str = "self") -> float | None:
    """A memory figure of /proc/<pid>/status in MB (``VmRSS``: the resident set now; ``VmHWM``: its peak), None
    where /proc or the process is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def resident_mb() -> float | None:
    """The process's resident set now (MB; VmRSS), None where /proc is not there."""
    return status_mb("VmRSS")


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
        hwm = status_mb("VmHWM")
        if hwm is None:
            scale = 1 if sys.platform == "darwin" else 1024
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024
        self.mb = float(hwm)


class TensorPeak:
    """``with TensorPeak() as peak: ...`` then ``peak.mb``: the peak of the bytes held by tensors created inside
    the block (on any device), counted per storage as ATen ops create them and released when their last tensor
    dies (``TorchDispatchMode``).

    The process's resident set cannot measure what one more masked image costs on a CPU: the allocator hands
    freed heap memory back out without the resident set growing, so two probes of 1 and 2 images often differ by
    0 MB. Counting the tensors themselves gives the activations' real size, whatever the allocator does (it
    misses only kernels' private scratch buffers, which the planner's safety margin absorbs)."""

    def __init__(self):
        self.mb = 0.0
        self._live: dict[int, list[int]] = {}  # storage data_ptr -> [bytes, tensors alive]
        self._bytes = 0
        self._peak = 0
        self._mode = None

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self._bytes -= entry[0]
            del self._live[key]

    @staticmethod
    def _storage(tensor: torch.Tensor) -> tuple[int, int]:
        try:
            storage = tensor.untyped_storage()
            return storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse, ...)
            return 0, 0

    def _track(self, tensor: torch.Tensor, outside: set[int]) -> None:
        import weakref

        key, nbytes = self._storage(tensor)
        if key == 0 or nbytes == 0 or (key in outside and key not in self._live):
            return  # a view of memory allocated before the block (weights, inputs)
        if key in self._live:
            self._live[key][1] += 1
        else:
            self._live[key] = [nbytes, 1]
            self._bytes += nbytes
            self._peak = max(self._peak, self._bytes)
        weakref.finalize(tensor, self._release, key)

    def __enter__(self) -> TensorPeak:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        owner = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                given = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
                ids = {id(t) for t in given}
                storages = {owner._storage(t)[0] for t in given}
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and id(t) not in ids:  # in-place ops return their input
                        owner._track(t, storages)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        self._mode = None
        self.mb = self._peak / 2**20
