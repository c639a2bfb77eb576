"""The interruption rule every `deploy` command that changes AWS follows.

SIGINT (Ctrl-C), SIGTERM (what CI systems and `kill` send) and SIGHUP (a closed terminal) are
handled the same way, also when the command was started as a background job (`deploy create ... &`:
a shell starts background jobs with SIGINT ignored, and Python keeps an inherited "ignored", so
without `handle_signals()` a `kill -INT` would do nothing). A SIGHUP that was ignored on purpose
(`nohup deploy ...`) stays ignored.

The rule, for a command that makes things in AWS:
  * before anything billable exists (local checks, upload, model, endpoint config): undo what this
    run made and exit 130 (143 for SIGTERM, 129 for SIGHUP);
  * once SageMaker is creating or updating an endpoint: do what `--on-interrupt` says
    (`rollback`, the default: delete / revert what this run started; `keep`: stop waiting, leave it
    and print how to resume or remove it), then exit with the same code;
  * a `--timeout` that runs out follows the same rule (exit 1: a timeout is a failure, not a signal);
  * the undo itself runs shielded: further signals are reported, not obeyed, so a second Ctrl-C
    cannot leave half a rollback. A second signal does make a rollback stop *waiting* for SageMaker
    (`Shield.received`), and the command then prints what is left.

Use it like this (this is what `create` and `update` in endpoint.py do):

    from sagemaker_tf_deploy.core import interrupts

    with interrupts.handle_signals():        # commands.main.main() already does this for every command
        try:
            ... make things ...
        except BaseException as exc:         # Interrupted is a BaseException, like KeyboardInterrupt
            with interrupts.shielded(reporter.info) as shield:
                ... undo (check shield.received in any wait loop) ...
            raise                             # main() turns Interrupted into exc.exit_code

and add the flag with `add_on_interrupt_argument(parser)`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import DeployError, interrupted_exit_code

ROLLBACK = "rollback"
KEEP = "keep"
ON_INTERRUPT_CHOICES = (ROLLBACK, KEEP)
DEFAULT_ON_INTERRUPT = ROLLBACK

HANDLED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


class Interrupted(BaseException):
    """Raised in the main thread when SIGINT, SIGTERM or SIGHUP arrives inside handle_signals().

    A BaseException (like KeyboardInterrupt, of which it is deliberately NOT a subclass, so
    code that swallows KeyboardInterrupt does not swallow it), so `except Exception` in botocore
    or in our own code never eats it.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
        return interrupted_exit_code(self.signum)

    def __str__(self) -> str:
        return f"interrupted by {self.name}"


class WaitTimedOut(DeployError):
    """A wait for SageMaker ran past --timeout; handled by the same rule as a signal (exit 1)."""


def is_stop(exc: BaseException) -> bool:
    """True for the stops the interruption rule covers: a signal, Ctrl-C or a timeout."""
    return isinstance(exc, (Interrupted, KeyboardInterrupt, WaitTimedOut))


def describe_stop(exc: BaseException) -> str:
    """'interrupted by SIGTERM', 'timed out: ...' or the message of any other failure."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    if isinstance(exc, WaitTimedOut):
        return f"timed out: {exc}"
    return str(exc) or type(exc).__name__


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def _handlers(handler) -> Iterator[None]:
    """HANDLER for every handled signal inside the block, the previous ones restored afterwards.
    An inherited SIG_IGN is overridden for SIGINT and SIGTERM (background jobs), kept for SIGHUP
    (nohup asked for it)."""
    previous = {}
    try:
        for signum in HANDLED:
            old = signal.getsignal(signum)
            if signum == getattr(signal, "SIGHUP", None) and old == signal.SIG_IGN:
                continue
            previous[signum] = old
            signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Inside the block SIGINT/SIGTERM/SIGHUP raise Interrupted(signum); restored afterwards.

    Works only in the main thread (Python delivers signals there); elsewhere it does nothing.
    An inherited SIG_IGN is overridden for SIGINT and SIGTERM (background jobs), kept for SIGHUP
    (nohup asked for it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _handlers(_raise):
        yield


@dataclass
class Shield:
    """What arrived while shielded: the signal numbers, in order."""

    received: list[int] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return bool(self.received)


@contextlib.contextmanager
def shielded(say: Callable[[str], None] | None = None) -> Iterator[Shield]:
    """Run a cleanup to its end: handled signals are recorded in the Shield, not raised.

    SAY (e.g. a reporter's info) is told once per signal that cleanup continues. Cleanup code that
    waits for SageMaker should give up waiting when `shield.received` is non-empty.
    """
    shield = Shield()
    if threading.current_thread() is not threading.main_thread():
        yield shield
        return

    def record(signum, frame):
        shield.received.append(signum)
        if say:
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = str(signum)
            try:
                say(f"{name} received while cleaning up: finishing the cleanup first "
                    "(a wait for SageMaker stops now; what is left is printed)")
            except Exception:
                pass

    with _handlers(record):
        yield shield


def add_on_interrupt_argument(parser, default: str = DEFAULT_ON_INTERRUPT, what: str = "the endpoint") -> None:
    """--on-interrupt rollback|keep, with the rule in its help text."""
    parser.add_argument(
        "--on-interrupt", choices=ON_INTERRUPT_CHOICES, default=default,
        help=f"what to do on Ctrl-C, SIGTERM, SIGHUP or --timeout once SageMaker is working on "
             f"{what}: rollback (delete/revert what this run started, waiting for SageMaker as "
             f"needed) or keep (stop waiting, leave it, print how to resume or remove it); "
             f"default {default}. Before that point the run is always undone.")
