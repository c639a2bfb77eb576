"""The HTTP worker's gunicorn worker class: gunicorn's gthread worker, changed where a model
server needs it (``ServeWorker``'s docstring says how). It runs in each HTTP worker after the fork;
the master only names it (``serve.server.gunicorn_options``)."""
from __future__ import annotations

import logging
import os
import re
import selectors
import socket
import threading
import time
from concurrent import futures
from functools import partial

import orjson
from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from serve.contract.memory import Trimmer

_current = threading.local()   # the gunicorn request a worker thread is handling


def close_this_connection(at_once: bool = False) -> None:
    """Make gunicorn close the connection after this response (it ignores an app's Connection
    header): for answers given before the whole body was read, whose rest must not be parsed as
    the next request. AT_ONCE: without gunicorn's 2 s linger for the client's unread bytes, which
    a stalled client never sends (and the linger runs on the worker's main loop, one at a time)."""
    req = getattr(_current, "req", None)
    if req is not None:
        req.must_close = True
        _current.at_once = at_once


PING_THREADS = 2   # /ping's own threads in each HTTP worker: requests cannot fill them
_PEEK = 8192       # enough for any /ping request head SageMaker (or a load balancer) sends
# GET /ping with its head complete and no body: the only requests the ping threads take
_PING_HEAD = re.compile(rb"GET /ping[ ?]")
_BODY_HEADER = re.compile(rb"\r\n(?:content-length|transfer-encoding)[ \t]*:", re.IGNORECASE)


def is_ping(head: bytes) -> bool:
    """Whether HEAD (the first bytes of a request) is a whole ``GET /ping`` with no body: one the
    ping threads can answer without ever waiting on the client."""
    end = head.find(b"\r\n\r\n")
    return end >= 0 and _PING_HEAD.match(head) is not None and not _BODY_HEADER.search(head, 0, end + 2)


def _write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answer (a request it cannot parse), as JSON like every other error."""
    body = orjson.dumps({"error": f"{reason}: {message}" if message else reason})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


# ServeArbiter's (serve/server.py), not gunicorn's 3: user code may exit with 3, and the master halts on this
WORKER_BOOT_ERROR = 78

class ServeWorker(ThreadWorker):
    """gunicorn's gthread worker, changed where a model server needs it:

    - The first workers accept at once and answer /ping 503 while their model loads,
      because SageMaker polls /ping from the start. A worker that replaces one that died
      loads before it accepts: the others are serving, and it must not take their traffic
      only to answer 503.
    - A model that fails to load stops the whole server (gunicorn halts on exit code 3)
      instead of leaving a worker that answers 503 forever; the reason is logged first.
    - On SIGTERM the listening sockets close at once, so new connections are refused while
      the requests already accepted finish.
    - Requests gunicorn itself cannot parse are answered in JSON.
    - No "100 Continue" for a body whose Content-Length is over the limit: the answer is a 413.
    - A body that pauses for SAGEMAKER_MODEL_SERVER_BODY_TIMEOUT seconds is answered 400 (the short-body error) and closed,
      so stalled uploads cannot hold a request thread for long.
    - After a request that left the worker much larger than before, freed memory goes back to the
      system (``serve.contract.memory``).
    - /ping has threads of its own (PING_THREADS), which requests cannot fill: the accepting
      thread looks at the bytes that arrived (MSG_PEEK) before it hands a connection to a pool,
      and a whole ``GET /ping`` head goes to the ping threads, everything else to the request
      threads. A connection with nothing to read yet waits on the poller instead of a thread, and
      the 2 s linger of a closing connection runs on the thread that answered, never on the
      accepting thread.
    """

    def init_process(self) -> None:
        util.write_error = _write_json_error
        self.ping_pool = futures.ThreadPoolExecutor(max_workers=PING_THREADS, thread_name_prefix="ping")
        self.trimmer = Trimmer()
        super().init_process()

    # -- which pool: /ping's or the requests' ------------------------------------------------------

    def _first_bytes(self, conn) -> bytes | None:
        """What the connection's next request starts with, without consuming it; None when nothing
        has arrived yet, b"" when the client closed."""
        if conn.parser is not None:
            buffered = conn.parser.unreader.buf.getvalue()
            if buffered:
                return buffered
        try:
            return conn.sock.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def enqueue_req(self, conn) -> None:
        if self.cfg.is_ssl:
            return super().enqueue_req(conn)
        head = self._first_bytes(conn)
        if head is None:  # wait for the request on the poller, not on a request thread
            conn.sock.setblocking(False)
            conn.timeout = time.monotonic() + self.cfg.keepalive
            self.pending_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
            return
        conn.data_ready = True
        pool = self.ping_pool if not head or is_ping(head) else self.tpool
        fs = pool.submit(self._handle_and_linger, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _handle_and_linger(self, conn):
        keepalive = self.handle(conn)
        if not keepalive:  # gunicorn would close (and linger up to 2 s) on the accepting thread
            conn.closed_here = True
            util.close_graceful(conn.sock)
        return keepalive

    def finish_request(self, conn, fs) -> None:
        if getattr(conn, "closed_here", False):
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)

    def handle_quit(self, sig, frame) -> None:
        self.ping_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    def load_wsgi(self) -> None:
        super().load_wsgi()  # ServeApplication.load: starts loading the model on a thread
        state = self.app.worker_state
        if self.age > self.cfg.workers:
            while not state.settled.wait(timeout=1.0):
                self.notify()  # the master would otherwise take a long load for a hung worker
            if state.status == "failed":
                raise SystemExit(WORKER_BOOT_ERROR)
        else:
            threading.Thread(target=self._exit_if_load_fails, args=(state,), name="load-watch",
                             daemon=True).start()

    @staticmethod
    def _exit_if_load_fails(state) -> None:
        state.settled.wait()
        if state.status == "failed":
            logging.shutdown()
            os._exit(WORKER_BOOT_ERROR)  # nothing was served yet; the master halts the server

    def handle_request(self, req, conn):
        self.trimmer.begin()
        try:
            return self._handle_request(req, conn)
        finally:
            _current.req = None
            self.trimmer.end()  # the answer is out and the request's arrays are gone

    def _handle_request(self, req, conn):
        _current.req, _current.at_once = req, False
        # a body that stops arriving: each read waits at most this long (app.read_body answers the short-body 400)
        conn.sock.settimeout(self.app.body_timeout)
        # gunicorn answers "Expect: 100-continue" before the app runs; for a body the app will refuse
        # with 413 (its Content-Length is over the limit) that would only invite the client to send it
        if getattr(req, "_expected_100_continue", False):
            length = next((v for k, v in req.headers if k == "CONTENT-LENGTH"), "")
            if length.strip().isdigit() and int(length) > self.app.max_payload_bytes:
                req._expected_100_continue = False
        keepalive = super().handle_request(req, conn)
        if _current.at_once:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return keepalive

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()
