"""Run a benchmark child (the worker or a floor server) under tracemalloc.

    python -m benchmarks.traced SNAPSHOT_DIR MODULE [ARGS ...]

MODULE (`server`, `benchmarks.floor_app`, ...) is imported first and its `main()` called
with ARGS as the command line; tracing starts in between, so imports (slow under
tracemalloc) are not traced.

Each SIGUSR1 writes `<n>.snapshot` (tracemalloc, 25 frames) into SNAPSHOT_DIR and, next
to it, `<n>.traced` with the bytes traced then. For finding which objects a waiting
request keeps; RSS under tracemalloc is not comparable with RSS without it.
"""

from __future__ import annotations

import importlib
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> None:
    out, target, *rest = sys.argv[1:]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(target)
    tracemalloc.start(25)
    taken = 0

    def dump(sig: int, frame: FrameType | None) -> None:
        nonlocal taken
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(folder / f"{taken}.snapshot"))
        (folder / f"{taken}.traced").write_text(str(tracemalloc.get_traced_memory()[0]))
        taken += 1

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = [target, *rest]
    module.main()


if __name__ == "__main__":
    main()
