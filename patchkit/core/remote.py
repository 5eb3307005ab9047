"""Rasters read over the network (a COG over HTTP(S), ``/vsicurl/``, ``/vsis3/``...): bounded retries, plain errors.

GDAL reads a remote raster in byte ranges through curl, and by default may wait on a stalled server for
ever. :func:`configure` sets bounded defaults for GDAL's HTTP configuration options (:data:`DEFAULTS`:
retries, their delay, timeouts, how the ranges of one read are fetched) in the process environment,
only those the user has not set, and only when a source's origin is remote. It runs when patchkit
starts reading a source (:func:`patchkit.core.sources.reading`) and before ``patchkit extract`` opens
one. The environment, not ``rasterio.Env``: GDAL falls back on the environment in every thread (dask's
workers included) and at each request, so the defaults hold for reads already opened and for every
read after, while a ``rasterio.Env``'s options end with its ``with`` block.

When a read fails anyway, :func:`read_error` says what the server answered (the HTTP status in GDAL's
retry warnings, which :func:`listening` collects; a body cut short; bytes that do not decode), what
to check, and that a rerun resumes. It also drops what GDAL cached of the file (:func:`forget`): GDAL
keeps a body cut short, or damaged bytes, in its cache for the life of the process, and a rerun in the
same process would read them again.

Nothing here imports rasterio: it is used only where rasterio is loaded already.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import contextmanager
from http import HTTPStatus
from typing import Iterator
from urllib.parse import urlsplit

from ..errors import SourceReadError

__all__ = ["is_remote", "configure", "DEFAULTS", "listening", "read_error", "forget"]

#: GDAL's HTTP configuration options patchkit sets when a source is remote and the user has not:
#: at most 3 retries (of 429, 5xx and connection errors), 1 s apart and then longer (GDAL backs off),
#: 30 s to connect, a transfer that moves no byte for 30 s abandoned, and 300 s for one request at most.
#: And the byte ranges of one read fetched one after the other (``SERIAL``) through GDAL's cache of
#: fetched ranges: GDAL's default fetches them in parallel, past that cache, so that a row band whose
#: rows span two rows of tiles fetched again the tiles the band before had fetched (twice the bytes,
#: 1.7 times the requests, in ``benchmarks/bench_remote.py``).
DEFAULTS = {
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "GDAL_HTTP_LOW_SPEED_TIME": "30",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    "GDAL_HTTP_TIMEOUT": "300",
    "GDAL_HTTP_MULTIRANGE": "SERIAL",
}

#: URL schemes and GDAL virtual file systems that read over the network (``zip+https://``, ``/vsizip//vsicurl/`` too).
_REMOTE = re.compile(r"^([a-z0-9]+\+)?(https?|ftp|s3|gs|gcs|az|azure|abfs|oss|swift)://"
                     r"|/vsi(curl|curl_streaming|s3|s3_streaming|gs|gs_streaming|az|az_streaming|adls|oss|"
                     r"oss_streaming|swift|swift_streaming|webhdfs)/", re.IGNORECASE)
#: GDAL's warning before each retry: ``HTTP error code: 500 - http://host/scene.tif. Retrying again in 1.0 secs``.
_RETRY = re.compile(r"HTTP error code: (\d+) - (\S+?)\.? Retrying")


def is_remote(origin: object) -> bool:
    """Whether ``origin`` (a path or URL as rioxarray records it in ``encoding["source"]``) is read over
    the network: ``http(s)://``, ``s3://``... or a GDAL network file system (``/vsicurl/``, ``/vsis3/``...)."""
    return isinstance(origin, str) and _REMOTE.search(origin) is not None


def configure(origin: object) -> dict[str, str]:
    """Set :data:`DEFAULTS` in ``os.environ`` where unset, when ``origin`` is remote; the options it set.

    A user's own values (in the environment) are kept, and so are options given to ``rasterio.Env``
    or ``gdal.SetConfigOption``, which GDAL reads before the environment. Nothing is written once
    every option is set, so calls while other threads read (through GDAL, which reads the
    environment) change nothing.
    """
    if not is_remote(origin):
        return {}
    unset = {name: value for name, value in DEFAULTS.items() if name not in os.environ}
    os.environ.update(unset)
    return unset


class _Heard(logging.Handler):
    """Collects the HTTP status codes in GDAL's retry warnings about one file (rasterio logs them)."""

    def __init__(self, name: str):
        super().__init__(logging.WARNING)
        self.name_in_url, self.codes = name, []

    def emit(self, record: logging.LogRecord) -> None:
        match = _RETRY.search(record.getMessage())
        if match is not None and self.name_in_url in match.group(2):
            self.codes.append(int(match.group(1)))


@contextmanager
def listening(origin: str) -> Iterator[list[int]]:
    """Within the block, collect the HTTP status of every retry GDAL reports for ``origin`` (0: no answer).

    GDAL warns before each retry; rasterio logs the warning (logger ``rasterio``), from whichever
    thread read. Codes of other files are left out.
    """
    heard = _Heard(_file_name(origin))
    logger = logging.getLogger("rasterio")
    logger.addHandler(heard)
    try:
        yield heard.codes
    finally:
        logger.removeHandler(heard)


def _file_name(origin: str) -> str:
    """The last part of the path of a URL or ``/vsi...`` path (what GDAL's messages end with)."""
    return urlsplit(origin.rsplit("/vsi", 1)[-1]).path.rstrip("/").rsplit("/", 1)[-1]


def forget() -> bool:
    """Drop what GDAL's network file systems cached (file sizes, byte ranges), so that the next read fetches
    again; False where that is not possible (rasterio not loaded, or a GDAL that does not export it)."""
    base = sys.modules.get("rasterio._base")
    if base is None:
        return False
    import ctypes

    try:
        ctypes.CDLL(base.__file__).VSICurlClearCache()  # a symbol of the libgdal rasterio's module links
    except (OSError, AttributeError):
        return False
    return True


def _answer(codes: list[int], causes: str) -> str:
    """What the server did, as far as GDAL tells: its last HTTP status, a body cut short, bytes that do not decode."""
    if codes and codes[-1]:
        try:
            phrase = f" {HTTPStatus(codes[-1]).phrase}"
        except ValueError:
            phrase = ""
        return f"the server answered HTTP {codes[-1]}{phrase}, also when GDAL retried"
    if codes:
        return "no answer came from the server, nor when GDAL retried (the connection failed, was refused or timed out)"
    if re.search(r"got 0 bytes, expected \d+", causes):
        return ("the server sent none of the bytes asked for (an answer GDAL does not retry, such as 404 Not Found or "
                "403 Forbidden: the file moved, or access expired)")
    if re.search(r"got \d+ bytes, expected \d+", causes):
        return "the server sent fewer bytes than asked for (the connection dropped, or the answer was cut short)"
    if re.search(r"decod|zlib|inflate|corrupt", causes, re.IGNORECASE):
        return "the bytes received do not decode (damaged on the way, or on the server)"
    return "the server's answer could not be read"


def _setting(name: str) -> str:
    """GDAL's value of a configuration option as this thread sees it (``rasterio.Env``'s, else the environment's)."""
    value = None
    if "rasterio.env" in sys.modules:
        value = sys.modules["rasterio.env"].get_gdal_config(name)
    value = os.environ.get(name) if value is None else value
    return "(GDAL's default)" if value is None else str(value)


def read_error(origin: str, err: BaseException, codes: list[int], causes: str) -> SourceReadError:
    """The :class:`SourceReadError` of a failed read of the remote ``origin`` (``causes``: the chained
    errors, as text); GDAL's cache is dropped first (:func:`forget`), so that a rerun fetches afresh."""
    forget()
    retries, delay, timeout = (f"{name}={_setting(name)}" for name in ("GDAL_HTTP_MAX_RETRY", "GDAL_HTTP_RETRY_DELAY",
                                                                        "GDAL_HTTP_TIMEOUT"))
    settings = f"{retries}, {delay} and {timeout}"
    return SourceReadError(
        f"reading {origin!r} over the network failed: {_answer(codes, causes)}; {type(err).__name__}: {err}{causes}. "
        f"Check the URL, the server and the network ({settings} set GDAL's retries and timeouts), then run the "
        "same call again: a sink's output resumes where it stopped"
    )
