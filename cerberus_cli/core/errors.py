"""Errors the user can act on.

Anything raised as :class:`CerberusError` is printed by the CLI as one line
(``error: <message>``) with a non-zero exit status, never as a traceback.
"""


class CerberusError(Exception):
    """An expected failure caused by input or environment, with a one-line message."""


class InputError(CerberusError):
    """A file given by the user is missing, unreadable, or malformed."""


class CheckpointError(InputError):
    """A model/checkpoint file cannot be loaded."""
