"""A real HTTP server on the loopback for remote-raster tests and benchmarks (standard library only).

The server serves the files of one folder as a static web server (or a cloud bucket) does: ``HEAD`` and
``GET``, byte ranges (``206 Partial Content`` with ``Content-Range``, ``Accept-Ranges: bytes``,
``Content-Length``), HTTP/1.1 keep-alive, one thread per connection
(:class:`http.server.ThreadingHTTPServer` on ``127.0.0.1``, port 0, daemon threads). It counts every
request and every body byte sent, and injects faults per path (:meth:`LoopbackServer.fault`): a status
(404, 500) always or for the first ``times`` requests, a delay longer than the client's timeout, a
connection dropped part way through a body, corrupted bytes. A fault can be limited to requests that
start at or after a byte offset (``after``: the first tile's offset), so that a raster still opens and its tile
reads fail.

It runs in a child process (``python tests/http_server.py FOLDER``), not in a thread of the process
that reads from it: rasterio calls GDAL while holding the GIL (``rasterio.open`` looks for sidecar
files over HTTP before it returns), and a server thread in that process could then never answer.
:class:`LoopbackServer` starts it, and sets faults and reads the counts through ``/_loopback/``
requests, which are neither counted nor faulted::

    with LoopbackServer(folder) as server:
        url = server.url("scene.tif")
        server.fault("scene.tif", "status", code=500, times=2, after=tile_data_start)
        ...
        server.requests, server.bytes_sent
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["LoopbackServer", "Fault", "Request", "FAULT_KINDS"]

#: What a fault does: answer with ``code``, wait ``seconds`` first, cut the body short, or flip its bytes.
FAULT_KINDS = ("status", "delay", "drop", "corrupt")


@dataclass
class Fault:
    """A fault injected into the answers for one path.

    Attributes
    ----------
    kind : {"status", "delay", "drop", "corrupt"}
    code : int
        The status a ``"status"`` fault answers with (404, 500, 503...).
    times : int or None
        How many more requests it hits (None: every one); a fault at 0 is spent.
    after : int
        Hits only ``GET`` requests of bytes from this file offset on (and ``HEAD`` requests only when 0),
        and a ``"corrupt"`` fault flips only bytes from there on.
    seconds : float
        How long a ``"delay"`` fault waits before answering.
    hits : int
        How many requests it hit so far.
    """

    kind: str
    code: int = 500
    times: int | None = None
    after: int = 0
    seconds: float = 5.0
    hits: int = 0

    def applies(self, method: str, start: int) -> bool:
        """Whether a request (``HEAD``, or a ``GET`` of bytes from ``start``) is hit."""
        if self.times is not None and self.times <= 0:
            return False
        return self.after == 0 if method == "HEAD" else start >= self.after


@dataclass(frozen=True)
class Request:
    """One request as the server saw it: method, path, the ``Range`` header, the status and body bytes sent."""

    method: str
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class _State:
    folder: Path
    faults: dict = field(default_factory=dict)
    log: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as curl (GDAL) expects of a file server
    state: _State  # set on the subclass each server makes

    def log_message(self, format, *args):  # quiet: the log is self.state.log
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        name = unquote(urlsplit(self.path).path).lstrip("/")
        file = (self.state.folder / name).resolve()
        inside = file.is_file() and self.state.folder.resolve() in file.parents
        size = file.stat().st_size if inside else 0
        span = _span(self.headers.get("Range"), size) if inside else None
        fault = self._fault(name, span[0] if span else 0)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "status":
            return self._status(fault.code, f"injected fault: {fault.code}\n".encode(), body)
        if not inside:
            return self._status(404, b"not found\n", body)
        if span is None:
            return self._status(416, b"range not satisfiable\n", body, {"Content-Range": f"bytes */{size}"})
        start, stop = span
        with open(file, "rb") as f:
            f.seek(start)
            data = f.read(stop - start) if body else b""
        if fault is not None and fault.kind == "corrupt":
            data = _flip(data, start, fault.after)
        partial = "Range" in self.headers
        headers = {"Accept-Ranges": "bytes", "Content-Type": "image/tiff", "Content-Length": str(stop - start)}
        if partial:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        self._send(206 if partial else 200, headers, data, cut=fault is not None and fault.kind == "drop")

    def _fault(self, name: str, start: int) -> Fault | None:
        """The fault that hits this request (counted), or None."""
        with self.state.lock:
            fault = self.state.faults.get(name)
            if fault is None or not fault.applies(self.command, start):
                return None
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
            return fault

    def _status(self, code: int, text: bytes, body: bool, extra: dict | None = None) -> None:
        headers = {"Content-Type": "text/plain", "Content-Length": str(len(text)), **(extra or {})}
        self._send(code, headers, text if body else b"")

    def _send(self, code: int, headers: dict, data: bytes, cut: bool = False, log: bool = True) -> None:
        """Send the status, headers and ``data`` (only its first half, then close the connection, when ``cut``)."""
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if cut:
            data = data[: len(data) // 2]
            self.close_connection = True
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (its timeout): nothing more to send
            self.close_connection = True
        if cut:
            self.connection.shutdown(2)
        if not log:
            return
        with self.state.lock:
            rng = self.headers.get("Range")
            self.state.log.append(Request(self.command, urlsplit(self.path).path, rng, code, len(data)))


def _span(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of a ``Range: bytes=a-b`` header (``a-``, ``-n`` too) in a file of ``size`` bytes;
    the whole file without a header; None when the range lies outside the file."""
    if not header:
        return 0, size
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None:
        return 0, size  # several ranges or another unit: the whole file, as servers may answer
    first, last = match.groups()
    if first == "":
        start, stop = max(size - int(last or 0), 0), size
    else:
        start, stop = int(first), min(int(last) + 1 if last else size, size)
    return (start, stop) if start < stop else None


def _flip(data: bytes, start: int, after: int) -> bytes:
    """``data`` (file bytes from offset ``start``) with every byte at offset ``after`` or later inverted."""
    keep = max(0, min(len(data), after - start))
    return data[:keep] + bytes(b ^ 0xFF for b in data[keep:])


CONTROL = "/_loopback/"


class _Control(_Handler):
    """The file server's handler, plus ``/_loopback/`` requests from :class:`LoopbackServer` (not counted)."""

    def do_GET(self):
        if self.path.startswith(CONTROL):
            return self._control(None)
        self._answer(body=True)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._control(json.loads(self.rfile.read(length) or b"null"))

    def _control(self, payload) -> None:
        command = self.path[len(CONTROL):]
        with self.state.lock:
            if command == "fault":
                name = payload.pop("name")
                self.state.faults[name] = Fault(**payload)
            elif command == "clear" and payload is None:
                self.state.faults.clear()
            elif command == "clear":
                self.state.faults.pop(payload, None)
            elif command == "reset":
                self.state.log.clear()
            answer = json.dumps({"log": [asdict(r) for r in self.state.log],
                                 "faults": {k: asdict(f) for k, f in self.state.faults.items()}}).encode()
        self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(answer))}, answer, log=False)


def serve(folder: str) -> None:
    """Serve ``folder`` until stdin closes (the parent's end of the pipe): print the port, then answer."""
    state = _State(Path(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Control,), {"state": state}))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="loopback-http", daemon=True).start()
    print(httpd.server_address[1], flush=True)
    sys.stdin.read()  # returns when the parent stops us or dies
    httpd.shutdown()


class LoopbackServer:
    """Files of ``folder`` over HTTP on ``127.0.0.1`` (a free port), served by a child process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :attr:`requests` and
    :attr:`bytes_sent` count what clients asked for and got; :meth:`reset_counts` starts them afresh.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.port = 0
        self._child: subprocess.Popen | None = None

    def url(self, name: str = "") -> str:
        """``http://127.0.0.1:PORT/name``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> "LoopbackServer":
        self._child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(self.folder)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._child.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the loopback server did not start (it printed {line!r})")
        self.port = int(line)
        return self

    def stop(self) -> None:
        if self._child is None:
            return
        self._child.stdin.close()
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._child.stdout.close()
        self._child = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, command: str, payload=None, method: str = "POST") -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = None if method == "GET" else json.dumps(payload).encode()
            connection.request(method, CONTROL + command, body=body, headers={"Content-Type": "application/json"})
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def fault(self, name: str, kind: str, **options) -> None:
        """Inject a :class:`Fault` of ``kind`` (options: its fields) into the answers for ``name``, replacing any other."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind={kind!r}: pass one of {FAULT_KINDS}")
        self._call("fault", {"name": name, "kind": kind, **options})

    def clear(self, name: str | None = None) -> None:
        """Remove the fault of ``name`` (of every path when None)."""
        self._call("clear", name)

    def faults(self) -> dict[str, Fault]:
        """The faults now set, by path (``hits``: the requests each hit so far)."""
        return {name: Fault(**fields) for name, fields in self._call("state", method="GET")["faults"].items()}

    @property
    def log(self) -> list[Request]:
        """Every request answered so far, in order."""
        return [Request(**fields) for fields in self._call("state", method="GET")["log"]]

    @property
    def requests(self) -> int:
        """Requests answered so far."""
        return len(self.log)

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent so far."""
        return sum(r.sent for r in self.log)

    def reset_counts(self) -> None:
        """Forget the requests answered so far."""
        self._call("reset")


if __name__ == "__main__":
    serve(sys.argv[1])
