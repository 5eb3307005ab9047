"""One shared thread pool for copies: numpy releases the GIL while it copies, so threads scale."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["num_threads", "get_pool"]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def num_threads() -> int:
    """Threads patchkit copies with: ``PATCHKIT_NUM_THREADS`` if set, else the cores this process may use."""
    env = os.environ.get("PATCHKIT_NUM_THREADS")
    if env:
        return max(int(env), 1)
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_pool(size: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``size`` workers (recreated when the size changes)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="patchkit")
            _pool_size = size
        return _pool
