"""The model process: TensorFlow, every model loaded once, the batcher over requests from all
HTTP workers, and the user's toolkit-style code (model_fn, input_fn, predict_fn, output_fn,
transform_fn), which runs here next to the model.

Started by the ``serve`` master (``python -m serve.model_process.main INDEX COUNT RUN_DIR [CODE_DIR PROGRAM [PACKAGES_DIR]]``), one per
``SAGEMAKER_TFS_INSTANCE_COUNT``, each owning its share of the vCPUs, with the user code the
master located (``CODE_DIR PROGRAM``, when there is any). It listens on
``RUN_DIR/model-INDEX.sock``; an HTTP worker connects once for each request it has in flight at
once and sends descriptors (``serve.contract.channel``), one request at a time per connection;
one loop reads them all (``Server``). Once every model is loaded and warm it writes
``RUN_DIR/model-INDEX.ready``; a start-up failure writes ``model-INDEX.failed`` with the reason
and exits 3, which ends the server. It exits when the master goes.
"""
from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from serve.contract import channel, handlers
from serve.model_process import batching

from serve import usercode
from serve.usercode import main_thread
from serve.contract.errors import ServeError, TooMuchMemory
from serve.contract.signature import Repository
from serve.model_process.loading import Servable, StartupFailure, load_model_dir, local_infer
from serve.model_process.model import configure_threads
from serve.model_process import heartbeat
from serve.model_process.multimodel import MultiModelService
from serve.contract.memory import Trimmer
from serve.contract.readiness import failed_path, hung_path, ready_path, socket_path
from serve.contract.redact import SecretFilter
from serve.contract.settings import load_settings, secret_values
from serve.contract.tuning import apply_environment, detect_cpu, plan

log = logging.getLogger("serve.model_process.model")


class ModelService:
    """What a model process serves: the servables, the toolkit script that runs here, and the ops."""

    def __init__(self, servables: Repository[Servable] | None, style: str,
                 handler: handlers.Handler | None):
        self.servables = servables
        self.style = style
        self.handler = handler      # a toolkit script's, run here

    def describe(self) -> dict:
        models = []
        for servable in (self.servables or []):
            m = servable.model
            models.append({"location": m.location, "loader": m.loader, "signatures": {
                name: (dict(sig.inputs), dict(sig.outputs), sig.method) for name, sig in m.signatures.items()}})
        return {"style": self.style, "default": self.servables.default if self.servables else None,
                "models": models, "pid": os.getpid()}


def load(settings, code: usercode.CodeLocation | None) -> ModelService:
    models = load_model_dir(settings.model_dir, code, settings, settings.tfs_default_model_name)
    return ModelService(models.servables, models.style, models.handler)


class _Peer:
    """One connection from an HTTP worker (one request at a time on it): its reader, the request
    segments it sent, and the segment our answers go into."""

    __slots__ = ("sock", "reader", "attached", "answer", "closed", "off_loop")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = channel.Reader(sock)
        self.attached: dict[str, channel.Segment] = {}
        self.answer: channel.Segment | None = None
        self.closed = False
        self.off_loop = False       # its request runs on a thread of the pool (not inference)


_ACCEPT, _WAKE = object(), object()


class Server:
    """One loop for every connection: it reads the descriptors that arrived (selectors over all of
    them), queues inference in the models' batchers, runs one batch, answers, and reads again.
    Inference has no thread and no hand-off; what is not inference (describe, toolkit scripts,
    multi-model loads and invokes) runs on a pool of threads, whose own inference goes through the
    same batchers, and whose answers the loop sends."""

    def __init__(self, service: ModelService, address: Path, timeout: float, threads: int = 64):
        self.service = service
        self.timeout = timeout
        self._infer = local_infer(service.servables) if service.servables is not None else None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(address))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.trimmer = Trimmer()
        self.scheduler = batching.scheduler()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model-op")
        self._posted: deque = deque()     # (peer, reply) from the pool's threads, for the loop to send
        self._selector = selectors.DefaultSelector()
        self.busy_since: float | None = None   # when the loop's current step began (None: waiting)

    def serve_forever(self) -> None:
        self.scheduler.loop_thread = threading.get_ident()
        selector = self._selector
        selector.register(self.listener, selectors.EVENT_READ, _ACCEPT)
        selector.register(self.scheduler.fileno(), selectors.EVENT_READ, _WAKE)
        scheduler = self.scheduler
        while True:
            self.busy_since = None
            events = selector.select(0 if scheduler.has_work() else None)
            self.busy_since = time.monotonic()
            for key, _ in events:
                if key.data is _ACCEPT:
                    if not self._accept():
                        return
                elif key.data is _WAKE:
                    scheduler.woken()
                else:
                    self._readable(key.data)
            while self._posted:
                self._send(*self._posted.popleft())
            if scheduler.has_work():
                scheduler.run_one()

    def _accept(self) -> bool:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            sock.settimeout(10.0)   # sends only: the loop reads what a selector said is there
            peer = _Peer(sock)
            self._selector.register(sock, selectors.EVENT_READ, peer)

    def _readable(self, peer: _Peer) -> None:
        try:
            messages = peer.reader.feed()
        except (EOFError, OSError):
            self._close(peer)
            return
        for op, request in messages:
            self.trimmer.begin()
            if op == "infer":
                self._queue_inference(peer, request)
            else:
                peer.off_loop = True
                self.pool.submit(self._off_loop, peer, op, request)

    def _queue_inference(self, peer: _Peer, request: dict) -> None:
        try:
            servables = self.service.servables
            if servables is None:
                raise ServeError("this server's model comes from model_fn; only its inference.py can call it", 400)
            inputs = channel.views(self._segment(request["segment"], peer.attached), request["arrays"]) \
                if request.get("arrays") else {}
            servable = servables.get(request["model"], request["version"])
            signature = request["signature"]
            examples = request.get("examples")
            if examples is not None:
                from serve.model_process.examples import serialize

                inputs = {servable.model.signatures[signature].example_input: serialize(*examples)}
            servable.batcher.add(signature, inputs, lambda outputs, error: self._inferred(peer, outputs, error),
                                 lambda: peer.closed, request.get("origin"))
        except BaseException as exc:
            self._send(peer, self._error_reply("infer", exc))

    def _inferred(self, peer: _Peer, outputs, error) -> None:
        if peer.closed:
            self.trimmer.end()
            return
        if error is None:
            try:
                reply, peer.answer = self._answer(outputs, peer.answer)
            except BaseException as exc:
                reply = self._error_reply("infer", exc)
        else:
            reply = self._error_reply("infer", error)
        self._send(peer, reply)

    def _off_loop(self, peer: _Peer, op: str, request: dict) -> None:
        try:
            reply, peer.answer = self._dispatch(op, request, peer.attached, peer.answer)
        except BaseException as exc:
            reply = self._error_reply(op, exc)
        self._posted.append((peer, reply))
        self.scheduler.wake()

    @staticmethod
    def _error_reply(op: str, exc: BaseException) -> tuple:
        if isinstance(exc, ServeError):
            return "error", exc.status, exc.message, exc.plain
        if isinstance(exc, MemoryError):  # decoding or building a request's arrays: the request's size
            log.warning("model process: %s: %s: %s", op, type(exc).__name__, exc)
            refused = TooMuchMemory.of(exc)
            return "error", refused.status, refused.message, False
        log.error("model process: %s failed", op, exc_info=exc)
        return "error", 500, f"internal error in the model process: {type(exc).__name__}: {exc}", False

    def _send(self, peer: _Peer, reply) -> None:
        """Answer PEER's request (on the loop's thread)."""
        peer.off_loop = False
        try:
            for path in [p for p, segment in peer.attached.items() if segment.size > channel.KEEP]:
                channel.done_with(peer.attached.pop(path))  # a large request's segment is never sent again
            if not peer.closed:
                channel.send(peer.sock, reply)
        except (OSError, ValueError):  # the worker gave up (timeout) or went away
            self._close(peer)
        finally:
            self.trimmer.end()  # the request's arrays are gone; the answer is in its segment
        if peer.closed:
            self._release(peer)

    def _close(self, peer: _Peer) -> None:
        if peer.closed:
            return
        peer.closed = True
        try:
            self._selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        peer.sock.close()
        if not peer.off_loop:   # else a pool thread still uses its segments: released after its answer
            self._release(peer)

    @staticmethod
    def _release(peer: _Peer) -> None:
        if peer.answer is not None:
            peer.answer.unlink()
            peer.answer.close()
            peer.answer = None
        for segment in peer.attached.values():
            segment.close()
        peer.attached.clear()

    def _segment(self, path: str, attached: dict) -> channel.Segment:
        segment = attached.get(path)
        if segment is None:
            for old in attached.values():  # the worker grew its segment: the old one is done with
                old.close()
            attached.clear()
            segment = attached[path] = channel.Segment(Path(path), 0, create=False)
        return segment

    def _answer(self, arrays: dict[str, np.ndarray], answer: channel.Segment | None):
        answer = channel.fitting(answer, channel.room(arrays), "serve-out")
        return ("ok", {"segment": str(answer.path), "arrays": channel.place(answer, arrays)}), answer

    def _whole_request(self, request: dict, attached: dict, answer, run):
        """A request handed over whole (body in, body out): toolkit scripts, multi-model invokes."""
        body = channel.views(self._segment(request["segment"], attached), request["arrays"])["body"]
        invocation = handlers.Invocation(body.tobytes(), request["content_type"], request["accept"],
                                         request["custom_attributes"])
        result = run(invocation)
        reply, answer = self._answer({"body": np.frombuffer(result.body, np.uint8)}, answer)
        reply[1]["content_type"] = result.content_type
        return reply, answer

    def _dispatch(self, op: str, request: dict, attached: dict, answer):
        if op == "describe":
            return ("ok", self.service.describe()), answer
        if op == "script":
            return self._whole_request(request, attached, answer, self.service.handler.handle)
        mme = self.service
        if op == "mme_load":
            return ("ok", mme.load(request["model_name"], request["url"])), answer
        if op == "mme_unload":
            return ("ok", mme.unload(request["model_name"])), answer
        if op == "mme_get":
            return ("ok", mme.entry(request["model_name"])), answer
        if op == "mme_list":
            return ("ok", mme.list()), answer
        if op == "mme_invoke":
            return self._whole_request(request, attached, answer, lambda invocation: mme.invoke(
                request["model_name"], invocation, request.get("default_path", False)))
        raise ServeError(f"unknown model-process operation {op!r}")


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = argv or sys.argv[1:]
    index, count, run_dir = int(args[0]), int(args[1]), Path(args[2])
    code = usercode.CodeLocation(Path(args[3]), args[4], Path(args[5]) if len(args) >= 6 else None) \
        if len(args) >= 5 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the master, which ends us in order
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    channel.set_run(run_dir)  # segments carry the run's name and our pid (serve.supervision removes them)
    settings = load_settings()
    secrets = SecretFilter(secret_values())
    from serve.cli import configure_logging

    configure_logging(settings.container_log_level, secrets)
    tuning = plan(settings, detect_cpu())
    apply_environment(tuning)
    started = time.perf_counter()
    try:
        configure_threads(tuning.intra_op_threads, tuning.inter_op_threads)
        if settings.multi_model:

            service = MultiModelService(settings, code, run_dir, index)
        else:
            service = load(settings, code)
    except (StartupFailure, usercode.UserCodeSetupError) as exc:
        log.debug("startup failure, traceback:", exc_info=True)
        log.error("startup failed: %s", exc)
        failed_path(run_dir, index).write_text(str(exc))
        logging.shutdown()
        return 3
    gc.collect()
    gc.freeze()  # TensorFlow's objects never die; keep full collections from walking them
    address = socket_path(run_dir, index)
    address.unlink(missing_ok=True)
    server = Server(service, address, settings.model_server_timeout, settings.model_server_threads)
    watchdog = getattr(service, "handler", None) and getattr(service.handler, "_watchdog", None)
    if watchdog is not None:
        hung = hung_path(run_dir, index)
        watchdog.on_change = lambda exhausted: hung.touch() if exhausted else hung.unlink(missing_ok=True)
    ready_path(run_dir, index).write_text(str(os.getpid()))
    heartbeat.start(run_dir, index)   # from now on the master expects a beat (serve.supervision)
    log.info("model process %d of %d ready in %.1f s (pid %d): intra_op_threads=%d inter_op_threads=%d, %s",
             index + 1, count, time.perf_counter() - started, os.getpid(), tuning.intra_op_threads,
             tuning.inter_op_threads, service.servables.describe() if service.servables else service.style)
    # the main thread imports user code (multi-model loads arrive on connection threads): signal.signal works there
    threading.Thread(target=server.serve_forever, name="model-accept", daemon=True).start()
    main_thread.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
