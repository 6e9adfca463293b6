"""Thread pools sized to the cores this process may use.

BLAS, OpenMP and torch each start one thread per core of the machine. Where the process may use fewer (a CPU
affinity mask, a container's CPU quota), those threads outnumber the cores and spin against each other: a busy
machine then slows tenni by an order of magnitude instead of in proportion. ``cpu_threads()`` sizes the pools for
the duration of a command and restores them after; nothing changes at import.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, lowered by a cgroup v2 CPU quota where there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@contextmanager
def cpu_threads(n: int | None = None) -> Iterator[int]:
    """Limit BLAS/OpenMP (threadpoolctl) and torch to ``n`` threads (default: ``usable_cores()``) inside the block.

    Libraries loaded inside the block read the environment variables set here (unless the user set them); those
    already loaded are limited through threadpoolctl and ``torch.set_num_threads``. Everything is restored after.
    """
    n = n or usable_cores()
    saved_env = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    for name, value in saved_env.items():
        if value is None:
            os.environ[name] = str(n)
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=n))
        except ImportError:
            pass
        if torch is not None and torch_threads > n:
            torch.set_num_threads(n)
        try:
            yield n
        finally:
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
            if torch is not None and torch_threads is not None:
                torch.set_num_threads(torch_threads)
