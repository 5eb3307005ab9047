"""The local pipeline every sink writes through: band n's writes run on threads while band n + 1 is made."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable

__all__ = ["pipelined", "finished"]


def pipelined(stream: Iterable[tuple[slice, Any]], in_flight: int, writers: int,
              submit: Callable[[ThreadPoolExecutor, slice, Any], list[Future]],
              land: Callable[[slice, list[Future]], None]) -> None:
    """Write the ``(rows, band)`` pairs of ``stream`` with ``writers`` threads, ``in_flight`` bands at a time.

    ``submit(pool, rows, band)`` starts a band's writes and returns their futures; ``land(rows, futures)``
    waits for them and logs the band. With two bands in flight, band n's writes run while band n + 1
    is made (the stream must keep band n valid meanwhile: ``bands(..., in_flight=2)``), and band n is
    landed before band n + 1's writes start, so two bands never write at once (kept patches may share
    a stored chunk across bands). With one, each band is written and landed before the next is made.
    No write of a band not landed runs on after an error.
    """
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="patchkit-sink") as pool:
        pending = None
        try:
            for rows, band in stream:
                if pending is not None:
                    land(*pending)
                pending = (rows, submit(pool, rows, band))
                if in_flight == 1:
                    land(*pending)
                    pending = None
            if pending is not None:
                land(*pending)
        finally:
            if pending is not None:
                wait(pending[1])


def finished(value: Any) -> Future:
    """A future already holding ``value`` (a result that came from elsewhere, landed like the others)."""
    done = Future()
    done.set_result(value)
    return done
