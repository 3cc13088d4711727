"""Errors caused by what a user handed us (a config, a file, a value), and how commands report them.

Every such error derives from :class:`UserError` (and from the builtin it refines, e.g. ``ValueError``, so
existing ``except ValueError`` code keeps working). The user-facing commands (``train_net.py``,
``python -m recursivedet.export``, ``.demo``, ``.checkpoint.convert``) run through :func:`run_command`:
a :class:`UserError` ends the command with one line ``error: ...`` on stderr and exit status 2, without a
traceback. ``RECURSIVEDET_TRACEBACK=1`` in the environment shows the traceback as well (for bug reports).
"""

import os
import sys
import traceback
from collections.abc import Callable

__all__ = [
    "TRACEBACK_ENV",
    "CheckpointFormatError",
    "ConfigFileError",
    "ConfigValueError",
    "NonFiniteError",
    "UserError",
    "run_command",
]

TRACEBACK_ENV = "RECURSIVEDET_TRACEBACK"
# Exit status of a command stopped by a user error (argparse uses 2 for bad arguments as well).
USER_ERROR_EXIT = 2


class UserError(Exception):
    """A problem with the user's input that the message fully explains; no traceback is needed."""


class CheckpointFormatError(UserError, ValueError):
    """A checkpoint that no converter of official checkpoints knows."""


class ConfigFileError(UserError, ValueError):
    """A config that does not exist (neither a file nor a config name) or cannot be parsed."""


class ConfigValueError(UserError, ValueError):
    """A config value that cannot work (e.g. no proposals, a class count that does not fit the dataset); the
    message names the key."""


class NonFiniteError(UserError, FloatingPointError):
    """The model computed NaN or infinite values (boxes, losses, gradients): its weights or its input are not
    finite, e.g. after training diverged."""


def run_command(main: Callable[[], object]) -> None:
    """Run a command's ``main``; exit 0 on success (or with ``main``'s integer result), 2 with one
    ``error: ...`` line on a :class:`UserError`. Other exceptions propagate (they are bugs: the traceback
    is what a report needs)."""
    try:
        result = main()
    except UserError as e:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        # A dataset error may list its problems on indented lines below the first: they are the message.
        print(f"error: {str(e).strip() or type(e).__name__}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
