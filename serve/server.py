"""The process model: a gunicorn master, its HTTP workers and the model processes.

    serve (gunicorn master)
      ├─ HTTP worker x N   gthread + Flask: decode, TF-container handlers, encode; no TensorFlow
      └─ model process x M serve.model_process.main: TensorFlow, every model once, the batcher for all workers

The master starts the model processes before it forks the workers, watches them from its
main loop (``ServeArbiter.manage_workers``, about once a second and on every SIGCHLD) and
starts a new one when one dies; /ping is 503 until it is warm again. A model process that
fails to load ends the server (exit 3) with its reason. /ping never waits behind inference:
it only reads flags, on a thread of its own. SIGTERM lets in-flight requests finish for up to
``GRACEFUL_TIMEOUT`` seconds (the model processes stay until the workers are gone), inside
SageMaker's 30 s before SIGKILL.

The gunicorn master restarts an HTTP worker that dies; ``ServeWorker`` decides what a worker
does around its start (see its docstring).
"""
from __future__ import annotations

import logging
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from functools import partial

import orjson
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from serve.contract.memory import Trimmer
from serve.contract.readiness import Readiness, failed_path, hung_path, ready_path
from serve.contract.redact import SecretFilter
from serve.contract.settings import Settings
from serve.contract.tuning import Tuning
from serve.usercode import CodeLocation

GRACEFUL_TIMEOUT = 25
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
KEEPALIVE = 75  # longer than the client side keeps idle connections, so we never close first


def gunicorn_options(settings: Settings, tuning: Tuning) -> dict:
    return {
        "bind": [f"0.0.0.0:{settings.bind_to_port}"],
        "workers": tuning.workers,
        "worker_class": "serve.server.ServeWorker",
        "threads": settings.model_server_threads,
        # gthread workers heartbeat from their main loop, so this only catches a wedged worker.
        "timeout": settings.model_server_timeout + 30,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": KEEPALIVE,
        "backlog": 2048,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": logging.getLevelName(settings.container_log_level).lower(),
        "proc_name": "serve",
        # heartbeat files on tmpfs, so a slow or read-only disk never looks like a hung worker
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "limit_request_line": 8190,
        # gunicorn's control socket is one fixed path per user: several servers would fight over it.
        "control_socket_disable": True,
    }


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
                raise SystemExit(ServeArbiter.WORKER_BOOT_ERROR)
        else:
            threading.Thread(target=self._exit_if_load_fails, args=(state,), name="load-watch",
                             daemon=True).start()

    @staticmethod
    def _exit_if_load_fails(state) -> None:
        state.settled.wait()
        if state.status == "failed":
            logging.shutdown()
            os._exit(ServeArbiter.WORKER_BOOT_ERROR)  # nothing was served yet; the master halts the server

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


class ModelProcesses:
    """The master's model processes: started, watched, replaced, stopped."""

    def __init__(self, count: int, run_dir, code: CodeLocation | None):
        self.count = count
        self.run_dir = run_dir
        # the master found (and unpacked, downloaded, installed) the user code once; they use it
        self.code_args = [str(code.directory), code.program] if code else []
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.ever_ready = [False] * count
        self.log = logging.getLogger("serve")

    def start(self, index: int) -> None:
        ready_path(self.run_dir, index).unlink(missing_ok=True)
        hung_path(self.run_dir, index).unlink(missing_ok=True)
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "serve.model_process.main", str(index), str(self.count), str(self.run_dir), *self.code_args])

    def start_all(self) -> None:
        for index in range(self.count):
            self.start(index)

    def check(self) -> str | None:
        """Replace any that died; the reason to end the server when one could not load."""
        for index, proc in enumerate(self.procs):
            if proc is None:
                continue
            if ready_path(self.run_dir, index).exists():
                self.ever_ready[index] = True
            if proc.poll() is None:
                continue
            failed = failed_path(self.run_dir, index)
            if failed.exists():
                return f"model process {index}: {failed.read_text()}"
            if not self.ever_ready[index]:  # it never got as far as loading: the same crash would repeat
                return f"model process {index} exited before it was ready (exit code {proc.returncode}); see its log above"
            ready_path(self.run_dir, index).unlink(missing_ok=True)
            self.log.error("model process %d (pid %d) exited; starting a new one, /ping is 503 until it is warm",
                           index, proc.pid)
            self.start(index)
        return None

    def stop(self, timeout: float = 10.0) -> None:
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


class ServeArbiter(Arbiter):
    """gunicorn's master, also minding the model processes on every turn of its loop.

    gunicorn halts the server when a worker exits with WORKER_BOOT_ERROR or APP_LOAD_ERROR (3 and 4
    by default). User code in an HTTP worker may call os._exit(3) in a request; that must cost a worker,
    never the server, so our workers report a failed start with a code nothing else uses, and the
    server still ends with 3 (as the README says) when one did.
    """

    WORKER_BOOT_ERROR = 78   # sysexits' EX_CONFIG
    APP_LOAD_ERROR = 79      # likewise gunicorn's 4
    EXIT_STARTUP_FAILED = 3

    def __init__(self, app: "ServeApplication"):
        super().__init__(app)
        self.models = app.model_processes

    def manage_workers(self) -> None:
        reason = self.models.check()
        if reason is not None:  # the model process logged its one "startup failed:" line already
            self.halt(reason, self.WORKER_BOOT_ERROR)
        super().manage_workers()

    def halt(self, reason=None, exit_status=0):
        failed = exit_status in (self.WORKER_BOOT_ERROR, self.APP_LOAD_ERROR)
        super().halt(reason, self.EXIT_STARTUP_FAILED if failed else exit_status)


class ServeApplication(BaseApplication):
    def __init__(self, settings: Settings, tuning: Tuning, code: CodeLocation | None,
                 secrets: SecretFilter):
        self._settings = settings
        self._tuning = tuning
        self._code = code
        self._secrets = secrets
        self.worker_state = None
        self.readiness = Readiness.create(tuning.workers)  # before the fork: every worker shares it
        self.max_payload_bytes = settings.max_payload_bytes
        self.body_timeout = settings.model_server_body_timeout
        self.model_processes = ModelProcesses(tuning.model_processes, self.readiness.directory, code)
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings, self._tuning).items():
            self.cfg.set(key, value)

    def load(self):
        # Runs in each worker after the fork (the master stays without NumPy: no BLAS threads across a fork).
        from serve.http_worker import worker
        from serve.http_worker.app import create_app

        run_dir, count = self.readiness.directory, self._tuning.model_processes
        self.worker_state = worker.start(self._settings, self._code, self.readiness, count,
                                         lambda: any(failed_path(run_dir, i).exists() for i in range(count)))
        return create_app(self._settings, self.worker_state, self._tuning, self._secrets, self.readiness)

    def run(self) -> None:
        self._master_pid = os.getpid()
        try:
            arbiter = ServeArbiter(self)
            self.model_processes.start_all()
            # gunicorn's logger has handlers of its own; they must mask secrets as the app's do.
            for handler in logging.getLogger("gunicorn.error").handlers:
                handler.addFilter(self._secrets)
            arbiter.run()
        except RuntimeError as exc:  # as gunicorn's own run() reports a configuration it cannot use
            print(f"serve: {exc}", file=sys.stderr)
            sys.exit(1)
        finally:
            if os.getpid() == self._master_pid:
                self.model_processes.stop()
                self.readiness.remove()
