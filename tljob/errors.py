"""The one base class for mistakes in what a user gave tljob.

Every ``UserError`` carries a message that names the thing at fault and what to do; the
CLI prints it without a traceback and exits with code 2.
"""


class UserError(Exception):
    """Bad input from the user (config, data, weights, paths): exit code 2."""


class JobFailedError(Exception):
    """The job started but could not finish (exit code 1); the message says what happened,
    what was kept, and what to do."""
