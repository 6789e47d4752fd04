"""Writing files so that a reader sees the old file or the new one, never half of one."""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """``with atomic_path(p) as tmp:`` write to ``tmp``; on success it becomes ``p`` in one rename,
    on an exception it is deleted and ``p`` is left as it was."""
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


def _umask():
    mask = os.umask(0o022)   # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)
