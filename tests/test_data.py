"""MNIST parsing, checksums, corrupt files, the download path, and the DataLoader."""

import functools
import gzip
import hashlib
import http.server
import shutil
import threading

import numpy as np
import pytest

import tinygrad_edu as tg
from tinygrad_edu.utils.data import DataLoader, Subset, TensorDataset
from tinygrad_edu.vision import datasets, transforms
from tinygrad_edu.vision.datasets import MNIST, DatasetFileError
from tinygrad_edu.vision.utils import make_grid, save_prediction_figure

from conftest import mnist_dir

MNIST_DIR = mnist_dir()
FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(scope="module")
def mnist_test():
    return MNIST(MNIST_DIR, train=False, transform=transforms.ToTensor())


def test_mnist_is_where_tests_expect_it():
    missing = [f for f in FILES if not (MNIST_DIR / (f + ".gz")).exists()]
    assert not missing, f"MNIST files {missing} not in {MNIST_DIR}; set TINYGRAD_EDU_DATA"


def test_parse_train_and_test(mnist_test):
    train = MNIST(MNIST_DIR, train=True)
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == tg.uint8
    assert train.targets.shape == (60000,) and train.targets.dtype == tg.int64
    assert len(mnist_test) == 10000
    assert mnist_test.targets[:12].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6]  # the lecture's row
    assert np.bincount(train.targets.numpy()).tolist()[:2] == [5923, 6742]
    image, label = mnist_test[0]
    assert image.shape == (1, 28, 28) and image.dtype == tg.float32 and label == 7
    assert 0.0 <= image.data.min() and image.data.max() == 1.0
    image_no_transform, _ = train[0]
    assert image_no_transform.shape == (1, 28, 28) and image_no_transform.dtype == tg.float32


def test_decompressed_files_and_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES[2:]:
        with gzip.open(MNIST_DIR / (name + ".gz")) as f:
            (raw / name).write_bytes(f.read())
    ds = MNIST(tmp_path, train=False)
    assert len(ds) == 10000


def _copy_test_split(tmp_path):
    for name in FILES[2:]:
        shutil.copy(MNIST_DIR / (name + ".gz"), tmp_path / (name + ".gz"))
    return tmp_path


def test_truncated_file_is_named(tmp_path):
    _copy_test_split(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(DatasetFileError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        MNIST(tmp_path, train=False)
    path.write_bytes(path.read_bytes()[:5000])   # a cut-off gzip stream
    with pytest.raises(DatasetFileError, match="t10k-images-idx3-ubyte.gz"):
        MNIST(tmp_path, train=False)


def test_corrupt_bytes_fail_the_checksum(tmp_path):
    _copy_test_split(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path) as f:
        data = bytearray(f.read())
    data[100] = (data[100] + 1) % 10
    with gzip.open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz.*MD5"):
        MNIST(tmp_path, train=False)


def test_wrong_magic_and_count_mismatch(tmp_path):
    _copy_test_split(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    shutil.copy(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz: magic number 2051"):
        MNIST(tmp_path, train=False)


def test_count_mismatch_is_reported(tmp_path, monkeypatch):
    _copy_test_split(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path) as f:
        data = f.read()
    short = data[:4] + (9999).to_bytes(4, "big") + data[8:-1]
    with gzip.open(path, "wb") as f:
        f.write(short)
    monkeypatch.setitem(MNIST.resources, "t10k-labels-idx1-ubyte", hashlib.md5(short).hexdigest())
    with pytest.raises(DatasetFileError, match="10000 images but .* 9999 labels"):
        MNIST(tmp_path, train=False)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*download=True.*TINYGRAD_EDU_DATA"):
        MNIST(tmp_path, train=False)


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGRAD_EDU_DATA", str(MNIST_DIR))
    assert MNIST(train=False).root == MNIST_DIR
    monkeypatch.delenv("TINYGRAD_EDU_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.default_root() == tmp_path / "tinygrad_edu" / "mnist"


# --- download against a local HTTP server -----------------------------------------------------
@pytest.fixture
def http_server(tmp_path):
    """Serve three mirrors on 127.0.0.1: /good/, /truncated/ and /corrupt/."""
    root = tmp_path / "www"
    for mirror in ("good", "truncated", "corrupt"):
        (root / mirror).mkdir(parents=True)
    for name in FILES[2:]:
        blob = (MNIST_DIR / (name + ".gz")).read_bytes()
        (root / "good" / (name + ".gz")).write_bytes(blob)
        (root / "truncated" / (name + ".gz")).write_bytes(blob[: len(blob) // 2])
        with gzip.open(MNIST_DIR / (name + ".gz")) as f:
            data = bytearray(f.read())
        data[-1] ^= 0xFF
        (root / "corrupt" / (name + ".gz")).write_bytes(gzip.compress(bytes(data)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_falls_through_bad_mirrors(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", [f"{http_server}/truncated/", f"{http_server}/corrupt/",
                                          f"{http_server}/missing/", f"{http_server}/good/"])
    target = tmp_path / "data"
    ds = MNIST(target, train=False, download=True)
    assert len(ds) == 10000
    assert sorted(p.name for p in target.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("mirror", ["truncated", "corrupt"])
def test_failed_download_leaves_nothing_that_looks_complete(http_server, tmp_path, monkeypatch, mirror):
    monkeypatch.setattr(MNIST, "mirrors", [f"{http_server}/{mirror}/"])
    target = tmp_path / "data"
    with pytest.raises(RuntimeError, match="(?s)could not download t10k-images-idx3-ubyte.gz.*" + mirror):
        MNIST(target, train=False, download=True)
    assert list(target.iterdir()) == []


def test_offline_download_error_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens on port 9
    with pytest.raises(RuntimeError, match=f"should be in {tmp_path}"):
        MNIST(tmp_path, train=False, download=True)


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


def test_fast_path_equals_per_sample_path(mnist_test):
    class PerSample(tg.utils.data.Dataset):   # no get_batch: the loader collates sample by sample
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return mnist_test[i]

    fast = list(DataLoader(Subset(mnist_test, np.arange(30)), batch_size=12))
    slow = list(DataLoader(PerSample(), batch_size=12))
    for (xf, yf), (xs, ys) in zip(fast, slow):
        assert xf.shape == xs.shape and np.array_equal(xf.numpy(), xs.numpy())
        assert np.array_equal(yf.numpy(), ys.numpy()) and yf.dtype == ys.dtype == tg.int64


def test_lecture_style_access(mnist_test):
    import tinygrad_edu as torch
    loader = torch.utils.data.DataLoader(mnist_test, batch_size=12)
    images, labels = iter(loader).next()        # the lecture's dataiter.next()
    assert images.shape == (12, 1, 28, 28) and labels.tolist()[:3] == [7, 2, 1]
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(mnist_test, batch_size=0)


def test_make_grid_like_torchvision():
    images = np.random.default_rng(0).random((5, 1, 4, 3)).astype(np.float32)
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3, 3 * 5 + 1, 2 * 4 + 1)
    assert np.array_equal(grid.data[0, 1:5, 1:4], images[0, 0])
    assert np.array_equal(grid.data[2, 11:15, 1:4], images[4, 0])  # 5th image: row 2, column 0
    assert grid.data[:, 0].max() == 0


def test_prediction_figure_is_written(tmp_path, mnist_test):
    images, labels = next(iter(DataLoader(mnist_test, batch_size=12)))
    path = save_prediction_figure(images, labels, labels.numpy()[::-1], tmp_path / "pred.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pred.png"]


@pytest.mark.parametrize("damage, message", [
    (lambda data: data + b"\0" * 10, "holds more: truncated or corrupt"),
    (lambda data: data[:4] + (2 ** 31).to_bytes(4, "big") + data[8:], "bytes: corrupt"),
])
def test_overlong_file_and_absurd_header_are_named(tmp_path, damage, message):
    _copy_test_split(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(damage(data))
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz.*" + message):
        MNIST(tmp_path, train=False)


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    import os
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
