"""``MNIST``: the IDX files read into arrays, checked, and downloaded when asked.

The signature mirrors torchvision's: ``MNIST(root, train=True, download=False, transform=None)``.
Files are looked for in ``root`` and in ``root/MNIST/raw`` (torchvision's layout), gzipped or not.
"""

import gzip
import hashlib
import math
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ..tensor import Tensor
from ..utils.data import Dataset
from ..utils.files import atomic_path


def default_root():
    """Where datasets live unless told otherwise: ``$TINYGRAD_EDU_DATA``, else a user cache dir."""
    if os.environ.get("TINYGRAD_EDU_DATA"):
        return Path(os.environ["TINYGRAD_EDU_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tinygrad_edu" / "mnist"


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
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetFileError(f"{path}: cannot be read as {kind} ({e}); the file is corrupt or "
                               f"truncated: delete it and download again") from e
    if got != expected or extra:
        raise DatasetFileError(f"{path}: header promises {shape} = {expected} bytes of data, the file "
                               f"holds {'more' if extra else got}: truncated or corrupt")
    digest = hashlib.md5(header)
    digest.update(data)
    return data.reshape(shape), digest.hexdigest()


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
    # MD5 of the *decompressed* bytes, which the .gz wrapper does not change
    resources = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }

    def __init__(self, root=None, train=True, download=False, transform=None):
        self.root = Path(root) if root is not None else default_root()
        self.train, self.transform = train, transform
        prefix = "train" if train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        paths = [self._find(name) for name in names]
        if None in paths:
            if not download:
                raise FileNotFoundError(self._missing_message(names, "pass download=True to fetch them"))
            paths = [p or self._download(name) for p, name in zip(paths, names)]
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
    def _folders(self):
        return [self.root, self.root / "MNIST" / "raw"]

    def _find(self, name):
        for folder in self._folders():
            for candidate in (folder / (name + ".gz"), folder / name):
                if candidate.is_file():
                    return candidate
        return None

    def _missing_message(self, names, advice):
        where = " or ".join(str(f) for f in self._folders())
        return (f"MNIST files not found: {', '.join(n + '.gz' for n in names)} should be in {where}. "
                f"Either {advice}, or copy the four IDX files (gzipped or not) there "
                f"(or set TINYGRAD_EDU_DATA to the folder that holds them).")

    def _download(self, name):
        """Fetch ``name``.gz from the first mirror that serves it intact and move it into place
        atomically: a partial download is never visible under the final name."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / (name + ".gz")
        failures = []
        for mirror in self.mirrors:
            url = mirror + name + ".gz"
            try:
                with atomic_path(target) as tmp:   # renamed into place only if fetched and intact
                    with open(tmp, "wb") as out:
                        _fetch(url, out)
                    with gzip.open(tmp, "rb") as f:
                        digest = hashlib.md5(f.read()).hexdigest()
                    if digest != self.resources[name]:
                        raise ValueError(f"MD5 of the decompressed bytes is {digest}, expected {self.resources[name]}")
                return target
            except (OSError, EOFError, zlib.error, ValueError, urllib.error.URLError) as e:
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


def _fetch(url, out, chunk=1 << 16):
    """Copy ``url`` into the open file ``out`` with a progress bar (only on a terminal)."""
    from tqdm import tqdm  # imported here: only downloads need it

    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=not sys.stderr.isatty(), leave=False) as bar:
            received = 0
            while True:
                block = response.read(chunk)
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if total is not None and received != total:
            raise OSError(f"connection closed after {received} of {total} bytes")
