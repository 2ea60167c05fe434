"""Writing a file so that no reader sees it half-written (``atomic_write``). The lowest layer beside ``errors``:
the records of core/ (``Attribution.save``, ``Diagnostics.save``, the frame and GIF writers), io/'s datasets and
the CLI all write through it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process's umask: read from /proc where it can be (no change to process state), else set and reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Writes through `write(file)` into a hidden temporary file beside `path`, then renames it into place, so
    a reader never sees a half-written file. The file gets the mode an ordinary ``open(path, "w")`` would give
    (0666 less the umask, usually 0644), not the temporary file's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
