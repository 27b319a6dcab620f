"""Errors the user can act on, and the exit status of every command.

Anything raised as :class:`CerberusError` is printed by the CLI as one line
(``error: <message>``) with a non-zero exit status, never as a traceback.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of every ``cerberus`` command (documented in docs/interfaces.md)."""

    OK = 0            #: everything asked for was done (or was already complete)
    SOME_FAILED = 1   #: the run went through but some inputs (slides, files) failed
    USAGE = 2         #: bad options or input: nothing was done
    INTERRUPTED = 130  #: Ctrl-C (SIGINT)
    TERMINATED = 143  #: SIGTERM (e.g. a Slurm time limit or preemption)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none).

    Third-party errors can run to pages; a one-line error quotes only this.
    """
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class CerberusError(Exception):
    """An expected failure caused by input or environment, with a one-line message."""


class InputError(CerberusError, ValueError):
    """A file or option given by the user is missing, unreadable, malformed or out of range."""


class CheckpointError(InputError):
    """A model/checkpoint file cannot be loaded."""


class Terminated(BaseException):
    """SIGTERM (e.g. Slurm preemption), raised in the main thread so cleanup runs.

    A ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` must not swallow it.
    """
