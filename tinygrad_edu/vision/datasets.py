"""``MNIST``: the IDX files read into arrays, checked, and downloaded when asked.

The signature mirrors torchvision's: ``MNIST(root, train=True, download=False, transform=None)``.
Files are looked for in ``root`` and in ``root/MNIST/raw`` (torchvision's layout), gzipped or not.
"""

import gzip
import hashlib
import http.client
import math
import os
import struct
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ..tensor import Tensor
from ..utils import progress_bars_wanted
from ..utils.data import Dataset
from ..utils.files import atomic_path, file_lock, remove_stale_parts


def cache_root():
    """The per-user download folder: ``$XDG_CACHE_HOME/tinygrad_edu/mnist`` or ``~/.cache/...``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tinygrad_edu" / "mnist"


def default_root():
    """Where datasets live unless told otherwise: ``$TINYGRAD_EDU_DATA``, else ``cache_root()``."""
    if os.environ.get("TINYGRAD_EDU_DATA"):
        return Path(os.environ["TINYGRAD_EDU_DATA"])
    return cache_root()


class DatasetFileError(ValueError):
    """A dataset file is missing, truncated, corrupt or inconsistent; the message names it."""


MAX_IDX_BYTES = 1 << 30  # a header promising more than this is corrupt, not a bigger MNIST


def _read_idx(path, magic, dims):
    """Read one IDX file: a big-endian header (magic, then one uint32 per dimension), then uint8s.

    The data is read straight into an array of the size the header promises (reading the whole
    stream first would hold it twice), and hashed as it stands. Returns (array, MD5 hex digest
    of the decompressed bytes).
    """
    kind = "gzip" if path.suffix == ".gz" else "IDX"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            header = f.read(4 * (1 + dims))
            if len(header) < 4 * (1 + dims):
                raise DatasetFileError(f"{path}: {len(header)} bytes is too short for an IDX header")
            found_magic, *shape = struct.unpack(f">{1 + dims}I", header)
            if found_magic != magic:
                raise DatasetFileError(
                    f"{path}: magic number {found_magic} (0x{found_magic:08x}), expected {magic} "
                    f"(0x{magic:08x}): not an MNIST {'image' if dims == 3 else 'label'} file")
            expected = math.prod(shape)
            if expected > MAX_IDX_BYTES:
                raise DatasetFileError(f"{path}: header promises {shape} = {expected} bytes: corrupt")
            data = np.empty(expected, dtype=np.uint8)
            view, got = memoryview(data), 0
            while got < expected:  # in 1 MB pieces: gzip makes a temporary copy of each piece
                n = f.readinto(view[got:got + (1 << 20)])
                if not n:
                    break
                got += n
            extra = len(f.read(1))
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:   # what a damaged gzip stream raises
        raise DatasetFileError(f"{path}: cannot be read as {kind} ({e}); the file is corrupt or "
                               f"truncated: delete it and download again") from e
    except PermissionError as e:   # the file may be fine: this user may not read it
        raise PermissionError(e.errno, f"cannot read {path}: permission denied (this user needs read "
                                       f"access to the file and its folder)") from e
    if got != expected or extra:
        raise DatasetFileError(f"{path}: header promises {shape} = {expected} bytes of data, the file "
                               f"holds {'more' if extra else got}: truncated or corrupt")
    digest = hashlib.md5(header)
    digest.update(data)
    return data.reshape(shape), digest.hexdigest()


def _mnist_folders(root):
    """Where MNIST's files may be under ``root``: in it, or in torchvision's MNIST/raw."""
    return [root, root / "MNIST" / "raw"]


def _find_file(folders, name):
    """The first of ``name``.gz and ``name`` in ``folders``, or None."""
    for folder in folders:
        for candidate in (folder / (name + ".gz"), folder / name):
            if candidate.is_file():
                return candidate
    return None


class MNIST(Dataset):
    """The MNIST digits: 60,000 training and 10,000 test images of 28 x 28 uint8 pixels.

    ``data`` is a uint8 tensor N x 28 x 28, ``targets`` an int64 tensor N. ``dataset[i]`` is
    ``(image, label)``: the image is ``transform(pixels)`` with ``pixels`` the uint8 28 x 28 array,
    or, with no transform, a float32 tensor 1 x 28 x 28 in [0, 1].
    """

    # torchvision's mirrors, tried in order; a class attribute so a test (or a user) can point
    # download() at another server
    mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/",
               "https://storage.googleapis.com/cvdf-datasets/mnist/"]
    # MD5 of the *decompressed* bytes, which the .gz wrapper does not change. Tests that write
    # small IDX files of their own put their sums here (monkeypatch); real files must match these.
    resources = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    # A mirror that answers, then sends a byte every few seconds, would never time out: each file
    # gets download_deadline seconds from each mirror (the largest is 9.9 MB: 300 s allows 33 kB/s),
    # and a mirror silent for download_timeout seconds is left at once.
    download_timeout = 30
    download_deadline = 300
    lock_name = ".download.lock"   # in root: one downloading process per folder (see download())

    def __init__(self, root=None, train=True, download=False, transform=None):
        self.root = Path(root) if root is not None else default_root()
        self.train, self.transform = train, transform
        prefix = "train" if train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        if download:
            self.download()
        paths = [self._find(name) for name in names]
        if None in paths:
            raise FileNotFoundError(self._missing_message(names, "pass download=True to fetch them"))
        images, image_md5 = _read_idx(paths[0], 2051, 3)
        labels, label_md5 = _read_idx(paths[1], 2049, 1)
        for path, name, md5 in ((paths[0], names[0], image_md5), (paths[1], names[1], label_md5)):
            if md5 != self.resources[name]:
                raise DatasetFileError(f"{path}: MD5 of the decompressed bytes is {md5}, expected "
                                       f"{self.resources[name]}: the file is corrupt; delete it and "
                                       f"download again")
        if len(images) != len(labels):
            raise DatasetFileError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds "
                                   f"{len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise DatasetFileError(f"{paths[1]}: label {labels.max()} is outside 0..9")
        self.data = Tensor._make(images, False, None)
        self.targets = Tensor._make(labels.astype(np.int64), False, None)

    # --- files --------------------------------------------------------------------------------
    @classmethod
    def files_in(cls, root):
        """Where the four IDX files are that MNIST(root) reads, without reading them: {name: path,
        or None for one that is not there} (for a record of the data a run used)."""
        return {name: _find_file(_mnist_folders(Path(root)), name) for name in cls.resources}

    def _folders(self):
        return _mnist_folders(self.root)

    def _find(self, name):
        return _find_file(self._folders(), name)

    def _missing_message(self, names, advice):
        where = " or ".join(str(f) for f in self._folders())
        return (f"MNIST files not found: {', '.join(n + '.gz' for n in names)} should be in {where}. "
                f"Either {advice}, or copy the four IDX files (gzipped or not) there "
                f"(or set TINYGRAD_EDU_DATA to the folder that holds them).")

    def download(self):
        """Fetch whichever of the four MNIST files ``root`` lacks (both splits, as torchvision does).

        One process at a time downloads into a folder: each holds the lock file ``root/lock_name``
        (the OS releases it when the process ends, however it ends), and a second one waits, then
        finds the files in place. Holding the lock, a ``.part`` file in ``root`` can only be what a
        killed download left: those are deleted first."""
        if all(self._find(name) for name in self.resources):
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with file_lock(self.root / self.lock_name,
                           f"waiting for another process downloading MNIST into {self.root}"):
                for name in self.resources:
                    remove_stale_parts(self.root / (name + ".gz"))
                for name in self.resources:
                    if self._find(name) is None:   # the process we waited for may have fetched it
                        self._download(name)
        except OSError as e:   # this machine's trouble (a full disk, a read-only folder): no mirror helps
            message = (f"cannot save MNIST in {self.root}: {e.strerror or e}; free some space or "
                       f"choose a folder you can write to (root=..., or TINYGRAD_EDU_DATA)")
            raise (OSError(e.errno, message) if e.errno else OSError(message)) from e

    def _download(self, name):
        """Fetch ``name``.gz from the first mirror that serves it intact and move it into place
        atomically: a partial download is never visible under the final name."""
        target = self.root / (name + ".gz")
        failures = []
        for mirror in self.mirrors:
            url = mirror + name + ".gz"
            try:
                with atomic_path(target) as tmp:   # renamed into place only if fetched and intact
                    with open(tmp, "wb") as out:
                        _fetch(url, out, self.download_timeout, self.download_deadline)
                    digest = _gzip_md5(tmp)
                    if digest != self.resources[name]:
                        raise MirrorError(f"MD5 of the decompressed bytes is {digest}, expected "
                                          f"{self.resources[name]}")
                return target
            except MirrorError as e:
                failures.append(f"  {url}: {e}")
        raise RuntimeError(f"could not download {name}.gz from any mirror:\n" + "\n".join(failures)
                           + "\n" + self._missing_message([name], "fix the network connection"))

    # --- samples ------------------------------------------------------------------------------
    def __len__(self):
        return len(self.data.data)

    def __getitem__(self, index):
        pixels, label = self.data.data[index], int(self.targets.data[index])
        if self.transform is None:
            image = Tensor._make(pixels[None].astype(np.float32) / np.float32(255), False, None)
        else:
            image = self.transform(pixels)
        return image, label

    def get_batch(self, indices):
        """(images, labels) for a whole batch with one fancy-index, when the transform allows."""
        pixels = self.data.data[indices]
        if self.transform is None:
            images = pixels[:, None].astype(np.float32) / np.float32(255)
        else:
            batched = getattr(self.transform, "apply_batch", None)
            images = batched(pixels) if batched is not None else None
            if images is None:
                return None
        return images, self.targets.data[indices]

    def __repr__(self):
        return (f"Dataset MNIST\n    Number of datapoints: {len(self)}\n    Root location: {self.root}\n"
                f"    Split: {'Train' if self.train else 'Test'}")


class MirrorError(Exception):
    """What a mirror did wrong (no answer, an HTTP error, a garbled or short response, too slow,
    damaged data): the download moves on to the next mirror."""


def _fetch(url, out, timeout, deadline, chunk=1 << 16):
    """Copy ``url`` into the open file ``out``, with a progress bar on a terminal.

    Whatever the network or the server does wrong raises MirrorError, and so does a file that is
    not complete ``deadline`` seconds after the start; an error writing ``out`` (a full disk)
    propagates as it is. ``timeout`` bounds each wait for the server (to connect, for each piece).
    """
    from tqdm.auto import tqdm  # imported here: only downloads need it; auto: a widget in Jupyter

    give_up = time.monotonic() + deadline
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as e:   # URLError and HTTPError are OSErrors
        raise MirrorError(f"{type(e).__name__}: {e}") from e
    with response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=not progress_bars_wanted(), leave=False) as bar:
            received = 0
            while True:
                try:   # read1: what has arrived, so a trickling server cannot hold one read for hours
                    block = response.read1(chunk)
                except (OSError, http.client.HTTPException) as e:   # IncompleteRead, a reset, a timeout
                    raise MirrorError(f"after {received} bytes: {type(e).__name__}: {e}") from e
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
                if time.monotonic() > give_up:
                    raise MirrorError(f"only {received} bytes after {deadline} s "
                                      f"(MNIST.download_deadline): too slow")
    if total is not None and received != total:
        raise MirrorError(f"connection closed after {received} of {total} bytes")


def _gzip_md5(path):
    """MD5 of the decompressed bytes of a downloaded file; a damaged stream is the mirror's fault."""
    digest = hashlib.md5()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise MirrorError(f"not a valid gzip file ({e})") from e
    return digest.hexdigest()
