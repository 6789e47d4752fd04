"""MNIST parsing, checksums, corrupt files, the download path, and the DataLoader.

As torchvision tests its datasets, most tests run on small IDX files they write themselves
(``fake_mnist``: 30 training and 20 test images), whose MD5s they put in ``MNIST.resources``; the
few that are about the real MNIST take the ``mnist_root`` fixture.
"""

import errno
import functools
import gzip
import hashlib
import http.server
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import conftest
import tinygrad_edu as tg
from conftest import MNIST_FILES, REPO
from tinygrad_edu.utils.data import DataLoader, Subset, TensorDataset
from tinygrad_edu.utils.files import file_lock
from tinygrad_edu.vision import datasets, transforms
from tinygrad_edu.vision.datasets import MNIST, DatasetFileError
from tinygrad_edu.vision.utils import make_grid, save_prediction_figure


def write_idx(path, array):
    """Write ``array`` (uint8) as an IDX file, gzipped if ``path`` ends in .gz; return the MD5 of
    the uncompressed bytes. The magic number is 0x0800 (uint8) + the number of dimensions."""
    blob = struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
    return hashlib.md5(blob).hexdigest()


def _fake_arrays():
    rng = np.random.default_rng(7)
    arrays = {}
    for split, n in (("train", 30), ("t10k", 20)):
        arrays[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    return arrays


FAKE = _fake_arrays()
FAKE_SUMS = {name: hashlib.md5(struct.pack(f">{1 + a.ndim}I", 0x800 + a.ndim, *a.shape) + a.tobytes())
             .hexdigest() for name, a in FAKE.items()}


@pytest.fixture
def fake_sums(monkeypatch):
    """MNIST accepts the fake files (and no longer the real ones) for this test."""
    monkeypatch.setattr(MNIST, "resources", dict(FAKE_SUMS))


@pytest.fixture
def fake_mnist(tmp_path, fake_sums):
    """A folder holding the four fake files, gzipped as MNIST is distributed."""
    folder = tmp_path / "fake"
    folder.mkdir()
    for name, array in FAKE.items():
        write_idx(folder / (name + ".gz"), array)
    return folder


def rewrite(path, change):
    """Replace the decompressed bytes of the gzipped ``path`` by ``change(bytes)``; return them."""
    data = change(gzip.decompress(path.read_bytes()))
    path.write_bytes(gzip.compress(data))
    return data


# --- the real MNIST ---------------------------------------------------------------------------
def test_real_mnist_parses_train_and_test(mnist_root):
    train, test = MNIST(mnist_root, train=True), MNIST(mnist_root, train=False, transform=transforms.ToTensor())
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == tg.uint8
    assert train.targets.shape == (60000,) and train.targets.dtype == tg.int64
    assert len(test) == 10000
    assert test.targets[:12].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6]  # the lecture's row
    assert np.bincount(train.targets.numpy()).tolist()[:2] == [5923, 6742]
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype == tg.float32 and label == 7
    assert 0.0 <= image.data.min() and image.data.max() == 1.0
    images, labels = iter(DataLoader(test, batch_size=12)).next()   # the lecture's dataiter.next()
    assert images.shape == (12, 1, 28, 28) and labels.tolist()[:3] == [7, 2, 1]


# --- reading and checking files: on fake ones ---------------------------------------------------
def test_reads_images_labels_and_samples(fake_mnist):
    train, test = MNIST(fake_mnist, train=True), MNIST(fake_mnist, train=False, transform=transforms.ToTensor())
    assert train.data.shape == (30, 28, 28) and train.data.dtype == tg.uint8
    assert np.array_equal(train.data.numpy(), FAKE["train-images-idx3-ubyte"])
    assert train.targets.dtype == tg.int64
    assert train.targets.tolist() == FAKE["train-labels-idx1-ubyte"].tolist()
    assert len(test) == 20
    for dataset in (train, test):   # no transform and ToTensor give the same float32 image
        image, label = dataset[3]
        assert image.shape == (1, 28, 28) and image.dtype == tg.float32
        assert np.allclose(image.numpy()[0] * 255, dataset.data.numpy()[3])
        assert label == dataset.targets.tolist()[3]
    assert "Number of datapoints: 20" in repr(test) and "Split: Test" in repr(test)


def test_decompressed_files_and_torchvision_layout(fake_mnist, tmp_path):
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES[2:]:
        write_idx(raw / name, FAKE[name])
    assert len(MNIST(tmp_path / "tv", train=False)) == 20


def test_files_in_says_where_each_file_is_without_reading_it(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not even IDX")   # found, not read
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"")
    assert MNIST.files_in(tmp_path) == {
        "train-images-idx3-ubyte": tmp_path / "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte": None,
        "t10k-images-idx3-ubyte": None,
        "t10k-labels-idx1-ubyte": raw / "t10k-labels-idx1-ubyte"}


def test_files_other_than_the_real_ones_fail_the_real_checksums(tmp_path):
    for name in MNIST_FILES[2:]:   # well-formed IDX files, but not MNIST's
        write_idx(tmp_path / (name + ".gz"), FAKE[name])
    with pytest.raises(DatasetFileError, match="t10k-images-idx3-ubyte.gz: MD5 .* expected 2646ac64"):
        MNIST(tmp_path, train=False)


def test_a_changed_byte_fails_the_checksum(fake_mnist):
    def flip(data):
        data = bytearray(data)
        data[-1] = (data[-1] + 1) % 10
        return bytes(data)
    rewrite(fake_mnist / "t10k-labels-idx1-ubyte.gz", flip)
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz.*MD5"):
        MNIST(fake_mnist, train=False)


def test_truncated_file_is_named(fake_mnist):
    path = fake_mnist / "t10k-images-idx3-ubyte.gz"
    rewrite(path, lambda data: data[:-100])
    with pytest.raises(DatasetFileError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        MNIST(fake_mnist, train=False)
    path.write_bytes(path.read_bytes()[:5000])   # a cut-off gzip stream
    with pytest.raises(DatasetFileError, match="t10k-images-idx3-ubyte.gz: cannot be read as gzip"):
        MNIST(fake_mnist, train=False)


def test_wrong_magic_is_named(fake_mnist):
    shutil.copy(fake_mnist / "t10k-images-idx3-ubyte.gz", fake_mnist / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz: magic number 2051"):
        MNIST(fake_mnist, train=False)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:4] + (19).to_bytes(4, "big") + data[8:-1], "20 images but .* 19 labels"),
    (lambda data: data[:-1] + bytes([12]), "label 12 is outside 0..9"),
])
def test_inconsistent_labels_are_reported(fake_mnist, monkeypatch, damage, message):
    # the checksum would catch these first: give the damaged file its own sum to reach the checks
    data = rewrite(fake_mnist / "t10k-labels-idx1-ubyte.gz", damage)
    monkeypatch.setitem(MNIST.resources, "t10k-labels-idx1-ubyte", hashlib.md5(data).hexdigest())
    with pytest.raises(DatasetFileError, match=message):
        MNIST(fake_mnist, train=False)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data + b"\0" * 10, "holds more: truncated or corrupt"),
    (lambda data: data[:4] + (2 ** 31).to_bytes(4, "big") + data[8:], "bytes: corrupt"),
])
def test_overlong_file_and_absurd_header_are_named(fake_mnist, damage, message):
    rewrite(fake_mnist / "t10k-labels-idx1-ubyte.gz", damage)
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz.*" + message):
        MNIST(fake_mnist, train=False)


def test_an_unreadable_file_says_permission_denied_not_corrupt(tmp_path, fake_sums, monkeypatch):
    for name in MNIST_FILES[2:]:
        write_idx(tmp_path / name, FAKE[name])

    def denied(path, mode="r"):   # chmod cannot deny root, who may run this: refuse by hand
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(datasets, "open", denied, raising=False)   # the reader's open()
    with pytest.raises(PermissionError, match="cannot read .*t10k-images-idx3-ubyte: permission denied") as e:
        MNIST(tmp_path, train=False)
    assert "corrupt" not in str(e.value)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*download=True.*TINYGRAD_EDU_DATA"):
        MNIST(tmp_path, train=False)


def test_default_root_follows_environment(monkeypatch, fake_mnist, tmp_path):
    monkeypatch.setenv("TINYGRAD_EDU_DATA", str(fake_mnist))
    assert MNIST(train=False).root == fake_mnist
    monkeypatch.delenv("TINYGRAD_EDU_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.default_root() == datasets.cache_root() == tmp_path / "tinygrad_edu" / "mnist"


# --- download, against mirrors on 127.0.0.1 -----------------------------------------------------
class _Mirror(http.server.SimpleHTTPRequestHandler):
    """/good/, /truncated/ (half the file), /corrupt/ (the wrong bytes) and /missing/ (404) are
    served from files; the rest misbehave at the HTTP level, as broken mirrors and proxies do."""

    def do_GET(self):
        kind, _, name = self.path.strip("/").partition("/")
        if kind not in ("garbled", "cut", "short", "slow"):
            return super().do_GET()
        blob = Path(self.directory, "good", name).read_bytes()
        if kind == "garbled":   # not an HTTP status line: http.client.BadStatusLine
            self.wfile.write(b"HELLO\r\n\r\n")
            return
        self.send_response(200)
        if kind == "cut":       # chunked, and the connection drops inside a chunk: IncompleteRead
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(blob) + blob[:100])
            return
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        if kind == "short":     # fewer bytes than Content-Length promised
            self.wfile.write(blob[: len(blob) // 2])
        else:                   # slow: a byte every 50 ms (gives up after 100, for the old code)
            for byte in blob[:100]:
                self.wfile.write(bytes([byte]))
                time.sleep(0.05)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirrors(tmp_path, fake_sums, monkeypatch):
    """The base URL of a server with one mirror of each kind (see _Mirror) holding the fake files;
    a mirror may stay silent for 5 s (a hang guard) and take 10 s for a file."""
    root = tmp_path / "www"
    for kind in ("good", "truncated", "corrupt"):
        (root / kind).mkdir(parents=True)
    for name, array in FAKE.items():
        write_idx(root / "good" / (name + ".gz"), array)
        blob = (root / "good" / (name + ".gz")).read_bytes()
        (root / "truncated" / (name + ".gz")).write_bytes(blob[: len(blob) // 2])
        write_idx(root / "corrupt" / (name + ".gz"), 255 - array)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Mirror, directory=root))
    server.handle_error = lambda request, address: None   # a client hanging up on /slow/ is expected
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setattr(MNIST, "download_timeout", 5)
    monkeypatch.setattr(MNIST, "download_deadline", 10)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_fetches_all_four_files_past_bad_mirrors(mirrors, tmp_path, monkeypatch):
    bad = ["truncated", "corrupt", "missing", "garbled", "cut", "short"]
    monkeypatch.setattr(MNIST, "mirrors", [f"{mirrors}/{kind}/" for kind in bad + ["good"]])
    target = tmp_path / "data"
    ds = MNIST(target, train=False, download=True)
    assert len(ds) == 20 and len(MNIST(target, train=True)) == 30
    assert sorted(p.name for p in target.iterdir()) == sorted([MNIST.lock_name] + [f + ".gz" for f in MNIST_FILES])


@pytest.mark.parametrize("mirror, cause", [
    ("truncated", "not a valid gzip file"), ("corrupt", "MD5 of the decompressed bytes"),
    ("missing", "HTTP Error 404"), ("garbled", "BadStatusLine"), ("cut", "IncompleteRead"),
    ("short", "connection closed after"), ("slow", r"after 0.3 s \(MNIST.download_deadline\): too slow"),
])
def test_each_bad_mirror_is_named_with_its_fault_and_leaves_no_file(mirrors, tmp_path, monkeypatch, mirror, cause):
    monkeypatch.setattr(MNIST, "mirrors", [f"{mirrors}/{mirror}/"])
    monkeypatch.setattr(MNIST, "download_deadline", 0.3)
    target = tmp_path / "data"
    with pytest.raises(RuntimeError, match=f"(?s)could not download [a-z0-9-]+.gz from any mirror.*{mirror}/.*{cause}"):
        MNIST(target, train=False, download=True)
    assert [p.name for p in target.iterdir()] == [MNIST.lock_name]


def test_offline_download_error_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens on port 9
    with pytest.raises(RuntimeError, match=f"(?s)Connection refused.*should be in {tmp_path}"):
        MNIST(tmp_path, train=False, download=True)


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "No space left on device"),
                                           (errno.EACCES, "Permission denied")])
def test_a_local_write_error_is_named_and_no_mirror_is_blamed(mirrors, tmp_path, monkeypatch, code, message):
    class Failing(io.BytesIO):   # what open(tmp, "wb") returns on a full disk or a read-only folder
        def write(self, block):
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(MNIST, "mirrors", [f"{mirrors}/good/", f"{mirrors}/good/"])
    monkeypatch.setattr(datasets, "open", lambda path, mode: Failing(), raising=False)
    target = tmp_path / "data"
    with pytest.raises(OSError, match=f"cannot save MNIST in {target}: {message}; free some space") as e:
        MNIST(target, train=False, download=True)
    assert e.value.errno == code and not isinstance(e.value, RuntimeError)
    assert "network" not in str(e.value) and "mirror" not in str(e.value)
    assert [p.name for p in target.iterdir()] == [MNIST.lock_name]   # no .part left


_KILLABLE_DOWNLOAD = """
import sys
from tinygrad_edu.vision.datasets import MNIST
MNIST.mirrors = [sys.argv[2]]
MNIST(sys.argv[1], download=True)
"""


def test_a_killed_download_leaves_no_part_file_after_the_next_one(mirrors, tmp_path, monkeypatch):
    target = tmp_path / "data"
    child = subprocess.Popen([sys.executable, "-c", _KILLABLE_DOWNLOAD, str(target), f"{mirrors}/slow/"],
                             cwd=REPO)
    try:
        for _ in range(600):   # the .part appears once the child has imported and connected
            parts = list(target.glob(".*.part")) if target.exists() else []
            if parts or child.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert [p.name for p in parts] and all(p.exists() for p in parts)   # what kill -9 leaves
    monkeypatch.setattr(MNIST, "mirrors", [f"{mirrors}/good/"])
    assert len(MNIST(target, train=False, download=True)) == 20
    assert not list(target.glob("*.part")) and not list(target.glob(".*.part"))


def test_a_download_in_progress_is_waited_for_and_its_part_file_kept(mirrors, tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", [f"{mirrors}/good/"])
    target = tmp_path / "data"
    target.mkdir()
    with file_lock(target / MNIST.lock_name):   # as another process downloading into target would
        live = target / ".t10k-images-idx3-ubyte.gz.other.part"
        live.write_bytes(b"being written")
        worker = threading.Thread(target=MNIST, args=(target,), kwargs={"download": True})
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and live.exists()   # waiting for the lock, touching nothing
    worker.join(60)
    assert not worker.is_alive() and not live.exists()   # then: the other process is gone, it is stale
    assert len(MNIST(target, train=False)) == 20


# --- how the tests find the real MNIST (conftest.py) -------------------------------------------
def test_tests_look_in_the_environment_then_beside_the_repo_then_the_cache(monkeypatch, tmp_path, fake_mnist):
    monkeypatch.setenv("TINYGRAD_EDU_DATA", str(fake_mnist))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert conftest.mnist_folders() == [fake_mnist, REPO.parent / "shared" / "mnist",
                                        tmp_path / "cache" / "tinygrad_edu" / "mnist"]
    assert conftest.mnist_dir() == fake_mnist and conftest.has_mnist(fake_mnist)
    (fake_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    assert not conftest.has_mnist(fake_mnist)


def test_without_mnist_a_test_skips_once_with_the_downloads_cause(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "mnist_folders", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr(conftest, "_download_failure", [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    attempts, download = [], conftest.download_mnist

    def offline(folder, seconds):   # the real mirrors, as a machine without network sees them
        attempts.append(folder)
        return download(folder, seconds, mirrors=["http://127.0.0.1:9/"])

    monkeypatch.setattr(conftest, "download_mnist", offline)
    monkeypatch.delenv("TINYGRAD_EDU_REQUIRE_DATA", raising=False)
    for _ in range(2):
        with pytest.raises(pytest.skip.Exception, match=r"needs MNIST: .* downloading them failed \(could "
                           r"not download train-images-idx3-ubyte.gz .*Connection refused.*MNIST\(download=True\)"):
            conftest.require_mnist()
    assert attempts == [tmp_path / "cache" / "tinygrad_edu" / "mnist"]   # one attempt per session
    monkeypatch.setenv("TINYGRAD_EDU_REQUIRE_DATA", "1")   # CI: missing data is a failure
    with pytest.raises(pytest.fail.Exception, match="TINYGRAD_EDU_REQUIRE_DATA is set"):
        conftest.require_mnist()


def test_a_download_that_hangs_is_given_up_at_its_deadline(mirrors, tmp_path):
    why_not = conftest.download_mnist(tmp_path / "data", 2, mirrors=[f"{mirrors}/slow/"])
    assert why_not == "the download did not finish within 2 s"


# --- DataLoader -------------------------------------------------------------------------------
def test_dataloader_batches_and_keeps_last_partial_batch():
    x, y = np.arange(50, dtype=np.float32).reshape(25, 2), np.arange(25)
    batches = list(DataLoader(TensorDataset(x, y), batch_size=10))
    assert [len(b[1]) for b in batches] == [10, 10, 5]
    assert np.array_equal(np.concatenate([b[0].numpy() for b in batches]), x)
    assert batches[0][1].dtype == tg.int64
    assert [len(b[1]) for b in DataLoader(TensorDataset(x, y), batch_size=10, drop_last=True)] == [10, 10]
    assert len(DataLoader(TensorDataset(x, y), batch_size=10)) == 3


def test_shuffle_is_a_permutation_reproducible_and_new_each_epoch():
    ds = TensorDataset(np.arange(100), np.arange(100))
    loader = DataLoader(ds, batch_size=7, shuffle=True, seed=3)
    first = np.concatenate([b[0].numpy() for b in loader])
    second = np.concatenate([b[0].numpy() for b in loader])
    assert sorted(first) == list(range(100)) and not np.array_equal(first, second)
    again = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=7, shuffle=True, seed=3)])
    assert np.array_equal(first, again)
    tg.manual_seed(1)
    a = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=7, shuffle=True)])
    tg.manual_seed(1)
    b = np.concatenate([b[0].numpy() for b in DataLoader(ds, batch_size=7, shuffle=True)])
    assert np.array_equal(a, b)


def test_fast_path_equals_per_sample_path(fake_mnist):
    train = MNIST(fake_mnist, train=True, transform=transforms.ToTensor())

    class PerSample(tg.utils.data.Dataset):   # no get_batch: the loader collates sample by sample
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return train[i]

    fast = list(DataLoader(Subset(train, np.arange(30)), batch_size=12))
    slow = list(DataLoader(PerSample(), batch_size=12))
    assert [len(y) for _, y in fast] == [12, 12, 6]
    for (xf, yf), (xs, ys) in zip(fast, slow):
        assert xf.shape == xs.shape and np.array_equal(xf.numpy(), xs.numpy())
        assert np.array_equal(yf.numpy(), ys.numpy()) and yf.dtype == ys.dtype == tg.int64


def test_lecture_style_access(fake_mnist):
    import tinygrad_edu as torch
    test = MNIST(fake_mnist, train=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(test, batch_size=12)
    images, labels = iter(loader).next()        # the lecture's dataiter.next()
    assert images.shape == (12, 1, 28, 28) and labels.tolist() == FAKE["t10k-labels-idx1-ubyte"][:12].tolist()
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(test, batch_size=0)


def test_make_grid_like_torchvision():
    images = np.random.default_rng(0).random((5, 1, 4, 3)).astype(np.float32)
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3, 3 * 5 + 1, 2 * 4 + 1)
    assert np.array_equal(grid.data[0, 1:5, 1:4], images[0, 0])
    assert np.array_equal(grid.data[2, 11:15, 1:4], images[4, 0])  # 5th image: row 2, column 0
    assert grid.data[:, 0].max() == 0


def test_prediction_figure_is_written(tmp_path, fake_mnist):
    test = MNIST(fake_mnist, train=False, transform=transforms.ToTensor())
    images, labels = next(iter(DataLoader(test, batch_size=12)))
    path = save_prediction_figure(images, labels, labels.numpy()[::-1], tmp_path / "pred.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["pred.png"]


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    from tinygrad_edu.utils.files import atomic_path, atomic_write_text
    target = tmp_path / "out" / "results.json"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask   # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]   # no leftovers
