"""The HTTP worker's gunicorn worker class: gunicorn's gevent worker (as in AWS's TensorFlow
container, whose handlers run in gunicorn gevent workers), changed where a model server needs it
(``ServeWorker``'s docstring says how). It runs in each HTTP worker after the fork; the master only
names it (``serve.server.gunicorn_options``)."""
from __future__ import annotations

import logging
import os
import socket

import gevent
import gevent.events
import orjson
from gevent.local import local
from gevent.lock import BoundedSemaphore
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

from serve.contract.memory import Trimmer

_current = local()   # the gunicorn request (and connection) a greenlet is handling


def close_this_connection(at_once: bool = False) -> None:
    """Make gunicorn close the connection after this response (it ignores an app's Connection
    header): for answers given before the whole body was read, whose rest must not be parsed as
    the next request. AT_ONCE: without waiting for the client's unread bytes, which a stalled
    client never sends."""
    req = getattr(_current, "req", None)
    if req is not None:
        req.must_close = True
        _current.at_once = at_once


def _write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answer (a request it cannot parse), as JSON like every other error."""
    body = orjson.dumps({"error": f"{reason}: {message}" if message else reason})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


# ServeArbiter's (serve/server.py), not gunicorn's 3: user code may exit with 3, and the master halts on this
WORKER_BOOT_ERROR = 78


class _Held:
    """Stands in for the socket while gunicorn writes a response head, and keeps it."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data) -> None:
        self.data += bytes(data)


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, sending its head with the first bytes of its body: one send per answer
    instead of two (on loopback each costs the kernel about as much as a small request's Flask work)."""

    _head = b""

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        sock, held = self.sock, _Held()
        self.sock = held
        try:
            super().send_headers()
        finally:
            self.sock = sock
        self._head = held.data

    def _flush_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            util.write(self.sock, head)

    def _emit_body(self, data) -> None:
        if self._head and not self.chunked:
            head, self._head = self._head, b""
            util.write(self.sock, head + data)
            return
        self._flush_head()
        super()._emit_body(data)

    def sendfile(self, respiter) -> bool:
        return False   # bodies are bytes here; write() sends them with the head

    def close(self) -> None:
        self._flush_head()
        super().close()


class ServeWorker(GeventWorker):
    """gunicorn's gevent worker: one greenlet per connection, requests decoded, sent to the model
    process and encoded on the worker's one thread, with no hand-off between threads. Changed where
    a model server needs it:

    - Requests in flight are bounded per worker (SAGEMAKER_MODEL_SERVER_THREADS, the request
      slots); /ping takes no slot, so it is answered while every slot is busy. A request waits for
      a slot once its head has arrived; connections that are still sending their head hold none.
    - The first workers accept at once and answer /ping 503 while their model loads,
      because SageMaker polls /ping from the start. A worker that replaces one that died
      loads before it accepts: the others are serving, and it must not take their traffic
      only to answer 503.
    - A model that fails to load stops the whole server (gunicorn halts on exit code 3)
      instead of leaving a worker that answers 503 forever; the reason is logged first.
    - On SIGTERM the listening sockets close at once, so new connections are refused, kept-alive
      connections waiting for their next request are closed, and the requests already accepted finish.
    - Requests gunicorn itself cannot parse are answered in JSON.
    - No "100 Continue" for a body whose Content-Length is over the limit: the answer is a 413.
    - A body that pauses for SAGEMAKER_MODEL_SERVER_BODY_TIMEOUT seconds is answered 400 (the short-body error) and closed,
      so stalled uploads cannot hold a request slot for long.
    - After a request that left the worker much larger than before, freed memory goes back to the
      system (``serve.contract.memory``).
    """

    def patch(self) -> None:
        # gevent looks for plugins (setuptools entry points) at each of the ~25 steps of patch_all,
        # scanning every installed distribution each time: 0.6 s of a worker's start here, 1.4 s on a
        # busy machine, where a replacement worker must be ready within 2 s. None is installed, and
        # its own subscribers are still told.
        discover, gevent.events.notify_and_call_entry_points = \
            gevent.events.notify_and_call_entry_points, gevent.events.notify
        try:
            super().patch()
        finally:
            gevent.events.notify_and_call_entry_points = discover

    def init_process(self) -> None:
        util.write_error = _write_json_error
        wsgi.Response = OneWriteResponse   # what gunicorn's wsgi.create makes, in this worker process
        self.trimmer = Trimmer()
        self.slots = BoundedSemaphore(self.cfg.threads)
        self.waiting: set = set()   # connections between requests (kept alive), closed on SIGTERM
        super().init_process()

    def handle(self, listener, client, addr):
        _current.sock = client
        super().handle(listener, client, addr)

    def timeout_ctx(self):
        return _Between(self, _current.sock, self.cfg.keepalive)

    def handle_quit(self, sig, frame) -> None:
        super().handle_quit(sig, frame)
        gevent.spawn(self._close_waiting)

    def _close_waiting(self) -> None:
        for sock in list(self.waiting):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def load_wsgi(self) -> None:
        super().load_wsgi()  # ServeApplication.load: starts loading the model on a greenlet
        state = self.app.worker_state
        if self.age > self.cfg.workers:
            while not state.settled.wait(timeout=1.0):
                self.notify()  # the master would otherwise take a long load for a hung worker
            if state.status == "failed":
                raise SystemExit(WORKER_BOOT_ERROR)
        else:
            gevent.spawn(self._exit_if_load_fails, state)

    @staticmethod
    def _exit_if_load_fails(state) -> None:
        state.settled.wait()
        if state.status == "failed":
            logging.shutdown()
            os._exit(WORKER_BOOT_ERROR)  # nothing was served yet; the master halts the server

    def handle_request(self, listener_name, req, sock, addr):
        if req.method == "GET" and req.path == "/ping":
            return super().handle_request(listener_name, req, sock, addr)
        with self.slots:
            self.trimmer.begin()
            try:
                return self._handle_request(listener_name, req, sock, addr)
            finally:
                _current.req = None
                self.trimmer.end()  # the answer is out and the request's arrays are gone

    def _handle_request(self, listener_name, req, sock, addr):
        _current.req, _current.at_once = req, False
        # a body that stops arriving: each read waits at most this long (app.read_body answers the short-body 400)
        sock.settimeout(self.app.body_timeout)
        # gunicorn answers "Expect: 100-continue" before the app runs; for a body the app will refuse
        # with 413 (its Content-Length is over the limit) that would only invite the client to send it
        if getattr(req, "_expected_100_continue", False):
            length = next((v for k, v in req.headers if k == "CONTENT-LENGTH"), "")
            if length.strip().isdigit() and int(length) > self.app.max_payload_bytes:
                req._expected_100_continue = False
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            sock.settimeout(None)   # between requests the keep-alive timeout applies, not the body's
            if _current.at_once:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Between:
    """The wait for a connection's next request: at most KEEPALIVE seconds, and known to the worker,
    which closes such connections when it is told to stop."""

    def __init__(self, worker: ServeWorker, sock, keepalive: float):
        self.worker, self.sock = worker, sock
        self.timeout = gevent.Timeout(keepalive, False)

    def __enter__(self):
        if not self.worker.alive:
            self.sock.shutdown(socket.SHUT_RDWR)
        self.worker.waiting.add(self.sock)
        return self.timeout.__enter__()

    def __exit__(self, *exc):
        self.worker.waiting.discard(self.sock)
        return self.timeout.__exit__(*exc)
