"""Errors the deploy command raises for problems the user can fix, and its exit codes.

Exit codes (the one table; docs/deploy.md repeats it, `deploy --help` points at it):

    0    done
    1    AWS refused or failed something, or a wait ended Failed / timed out (message on stderr)
    2    usage: bad arguments or a local input that fails a local check (nothing was sent to AWS)
    130  interrupted by SIGINT (Ctrl-C)        } what was left or undone is printed first,
    143  interrupted by SIGTERM                }  see deploy/sagemaker_tf_deploy/core/interrupts.py
    129  interrupted by SIGHUP                 }
    141  stdout closed early (`deploy status X | head -1`): no traceback, like a SIGPIPE exit

Raise `UsageError` for anything found without a network call (exit 2), `DeployError` for the rest
(exit 1). `interrupts.Interrupted` carries 128 + the signal number.
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
BROKEN_PIPE = 141          # 128 + SIGPIPE


def interrupted_exit_code(signum: int) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + int(signum)


class DeployError(Exception):
    """A failure with a message meant for the user (printed without a traceback); exit 1."""

    exit_code = FAILED


class UsageError(DeployError):
    """A bad argument or local input, found before any network call; exit 2 (argparse's code)."""

    exit_code = USAGE
