"""Writing files so that a reader sees the old file or the new one, never half of one."""

import contextlib
import glob
import os
import sys
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:   # Windows: no flock (see file_lock)
    fcntl = None


@contextlib.contextmanager
def atomic_path(path):
    """``with atomic_path(p) as tmp:`` write to ``tmp``; on success it becomes ``p`` in one rename,
    on an exception it is deleted and ``p`` is left as it was. A process killed meanwhile leaves
    ``tmp`` behind (``.<name>.<random>.part`` beside ``p``): see ``remove_stale_parts``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_parts(path):
    """Delete the ``.part`` files that killed writers of ``atomic_path(path)`` left behind.

    Call it only while holding a ``file_lock`` that every writer of ``path`` holds while writing:
    then no ``.part`` of ``path`` can belong to a live writer. (Where there is no lock, on Windows,
    a file another process still has open cannot be deleted, and is skipped.)"""
    path = Path(path)
    for part in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            part.unlink()


@contextlib.contextmanager
def file_lock(path, waiting_message=None):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block,
    waiting while another process holds it (printing ``waiting_message`` to stderr, if given).

    The operating system drops the lock when its holder exits, however it exits (kill -9 too), so
    a lock never outlives its process. The empty file stays: deleting it while another process
    waits on it would let two processes each hold a lock on a different file of that name.
    Without flock (Windows) the block runs unlocked."""
    with open(path, "a") as f:   # "a": create it if missing, never truncate
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting_message:
                    print(waiting_message, file=sys.stderr)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield   # closing f releases the lock


def _umask():
    mask = os.umask(0o022)   # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)
