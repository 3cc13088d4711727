"""One run at a time per output folder, and a folder that can be written, checked before the expensive work.

:func:`output_folder` creates the folder, checks that files can be made in it, and holds an advisory lock
(``fcntl.flock`` on ``FOLDER/.recursivedet.lock``) for as long as a command writes there. A second command
on the same folder stops at once with one line naming the folder and the process that holds it; the lock
goes with its process, so a killed run leaves nothing to clean up. Where ``fcntl`` does not exist
(Windows), the folder is checked but not locked.
"""

import errno
import os
import sys
import tempfile
from contextlib import contextmanager

from recursivedet.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["LOCK_FILE", "OutputFolderError", "output_folder"]

LOCK_FILE = ".recursivedet.lock"


class OutputFolderError(UserError, OSError):
    """An output folder that cannot be written, or that another run is writing into."""


def _describe(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


@contextmanager
def output_folder(folder: str, what: str = "this run"):
    """Create ``folder`` (and its parents), check that it can be written, and hold its lock until the block
    ends. Raises :class:`OutputFolderError` naming the folder: when it cannot be created or written (permission,
    a file in the way, a full disk) or when another process holds the lock.

    Args:
        what: the command, for the lock file that the message of a second run quotes (e.g. "train_net.py").
    """
    folder = os.fspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        # O_NOFOLLOW: a symlink planted at the lock's name is refused, never written through
        fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        raise OutputFolderError(f"output folder {folder} cannot be created: a file of that name is there") from None
    except OSError as e:
        reason = "a symlink is in place of its lock file" if e.errno == errno.ELOOP else _describe(e)
        raise OutputFolderError(f"output folder {folder} cannot be written: {reason}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "another process"
                raise OutputFolderError(
                    f"output folder {folder} is in use by {holder}; wait for it to end, or choose another folder"
                ) from None
        command = " ".join([os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]])[:300]
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} ({what}: {command})\n".encode(), 0)
        except OSError as e:
            raise OutputFolderError(f"output folder {folder} cannot be written: {_describe(e)}") from None
        try:  # the lock file may be there from an earlier run: check that new files can be made
            probe, probe_path = tempfile.mkstemp(dir=folder, prefix=".write-check-")
            os.close(probe)
            os.remove(probe_path)
        except OSError as e:
            raise OutputFolderError(f"output folder {folder} cannot be written: {_describe(e)}") from None
        yield folder
    finally:
        os.close(fd)  # releases the lock
