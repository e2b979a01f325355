"""dlcore.engine.data: the registry, the validating readers, the sources in order, the fallbacks."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcore.engine import data
from dlcore.engine.data import (
    DATASETS,
    DatasetError,
    choice_label,
    default_data_dir,
    download_dataset,
    load_dataset,
    load_with_fallback,
)

REAL_MNIST = [Path("/work/shared/data/mnist"), Path(__file__).parents[2] / "shared/data/mnist"]
rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own empty DLLAB_HOME, so the user's real cache never leaks in."""
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> Path:
    header = magic or bytes([0, 0, 8, array.ndim])
    raw = header + np.array(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def make_mnist(folder: Path, gz: bool = True, n_train: int = 30, n_test: int = 12) -> dict:
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test)[::-1] % 10}
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


def test_registry():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "kmnist", "cifar10", "digits", "mnist-sample"}
    assert DATASETS["cifar10"].shape == (3, 32, 32) and DATASETS["cifar10"].classes[0] == "airplane"
    assert DATASETS["fashion-mnist"].classes[-1] == "Ankle boot"
    assert not DATASETS["digits"].downloadable and DATASETS["kmnist"].downloadable
    with pytest.raises(DatasetError, match="Unknown dataset"):
        load_dataset("svhn")


def test_a_selector_says_which_datasets_are_not_downloaded(tmp_path, home):
    assert choice_label("fashion-mnist") == "Fashion-MNIST (not downloaded)"
    assert choice_label("digits") == "scikit-learn digits (8x8)"  # bundled: always there
    assert choice_label("mnist", tmp_path / "nowhere") == "MNIST (not downloaded)"
    make_mnist(tmp_path / "d" / "MNIST" / "raw")
    assert choice_label("mnist", tmp_path / "d") == "MNIST"
    assert choice_label("fashion-mnist", tmp_path / "d") == "Fashion-MNIST (not downloaded)"
    make_mnist(home / "data" / "FashionMNIST" / "raw")  # the cache a download fills
    assert choice_label("fashion-mnist") == "Fashion-MNIST"
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    assert choice_label("kmnist", loop) == "KMNIST (Kuzushiji) (not downloaded)"


def test_default_data_dir(home):
    assert default_data_dir() == home / "data"


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "MNIST/raw"])
def test_folder_layouts(tmp_path, gz, layout):
    arrays = make_mnist(tmp_path / "d" / layout, gz=gz)
    ds = load_dataset("mnist", tmp_path / "d")
    assert ds.train_x.shape == (30, 1, 28, 28) and ds.test_x.shape == (12, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]).byte())
    pixels = arrays["train-images-idx3-ubyte"] / 255.0
    assert ds.mean[0] == pytest.approx(pixels.mean()) and ds.std[0] == pytest.approx(pixels.std())
    assert ds.source == f"folder {tmp_path / 'd' / layout}".rstrip("/")


def test_cache_and_other_torchvision_layouts(tmp_path, home):
    make_mnist(home / "data" / "FashionMNIST" / "raw")
    ds = load_dataset("fashion-mnist", tmp_path / "nothing-here")
    assert ds.source.startswith("cache ") and ds.classes[0] == "T-shirt/top"
    make_mnist(tmp_path / "k" / "KMNIST" / "raw", gz=False)
    assert load_dataset("kmnist", tmp_path / "k").source.startswith("folder ")
    make_mnist(home / "data")  # flat files in the cache are ambiguous (same names): not used
    with pytest.raises(DatasetError, match="No MNIST files"):
        load_dataset("mnist")


def _truncate(folder: Path) -> str:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    return path.name


def _bad_gzip(folder: Path) -> str:
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    return path.name


def _wrong_magic(folder: Path) -> str:
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(30), magic=bytes([0, 0, 8, 3]))
    return "train-labels-idx1-ubyte.gz"


def _label_out_of_range(folder: Path) -> str:
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(12, 10))
    return "t10k-labels-idx1-ubyte.gz"


def _count_mismatch(folder: Path) -> str:
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29))
    return "train-labels-idx1-ubyte.gz"


def _wrong_size(folder: Path) -> str:
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((30, 32, 32)))
    return "train-images-idx3-ubyte.gz"


def _missing(folder: Path) -> str:
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    return "t10k-labels-idx1-ubyte"


@pytest.mark.parametrize("breaker", [_truncate, _bad_gzip, _wrong_magic, _label_out_of_range,
                                     _count_mismatch, _wrong_size, _missing])
def test_broken_files_are_refused_by_name(tmp_path, breaker):
    make_mnist(tmp_path)
    name = breaker(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", tmp_path)
    assert name in str(info.value)


IDX_IMAGES_10 = bytes([0, 0, 8, 3]) + np.array((10, 28, 28), ">u4").tobytes()


def write_gzip_bomb(folder: Path, gib: int = 1, header: bytes = IDX_IMAGES_10) -> Path:
    """MNIST's four files in `folder` for 10 training images, the images file a gzip bomb: its
    `header` declares (by default) 10x28x28, 7,840 bytes, and ~1 MB of gzip decompresses to `gib`
    GiB of zeros.
    Written as it streams, one 1 MiB gzip member at a time (a gzip file may hold many), so the test
    never holds more than 1 MiB of zeros."""
    make_mnist(folder, n_train=10)
    member = gzip.compress(bytes(1 << 20), compresslevel=9)
    path = folder / "train-images-idx3-ubyte.gz"
    with path.open("wb") as out:
        out.write(gzip.compress(header))
        for _ in range(1024 * gib):
            out.write(member)
    return path


# Loads MNIST from argv[1] in a fresh process allowed 1 GiB more address space than it has after
# its imports, and prints the refusal and the extra memory it took: peak RSS (VmHWM, reset first
# through /proc/self/clear_refs) over the RSS before, and tracemalloc's peak.
MEMORY_PROBE = """
import json, resource, sys, tracemalloc
from dlcore.engine.data import DatasetError, load_dataset

def status(key):
    text = open("/proc/self/status").read()
    return int(text.split(key + ":")[1].split()[0]) * 1024

resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + (1 << 30),
                                        resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
before = status("VmRSS")
tracemalloc.start()
try:
    load_dataset("mnist", sys.argv[1])
    message = None
except DatasetError as exc:
    message = str(exc)
traced = tracemalloc.get_traced_memory()[1]
print(json.dumps({"message": message, "rss": status("VmHWM") - before, "traced": traced}))
"""


def load_in_a_probe(folder: Path, what: str) -> dict:
    """MEMORY_PROBE's refusal and extra memory for MNIST in `folder`, printed as `what`."""
    run = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(folder)], capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.splitlines()[-1])
    print(f"{what} refused with {seen['rss'] / 1e6:.1f} MB more peak RSS, "
          f"{seen['traced'] / 1e6:.2f} MB traced")
    return seen


def test_a_gzip_bomb_is_refused_within_100_mb(tmp_path):
    bomb = write_gzip_bomb(tmp_path)
    assert bomb.stat().st_size < 1_200_000
    seen = load_in_a_probe(tmp_path, f"gzip bomb (1 GiB in {bomb.stat().st_size:,} bytes)")
    assert seen["message"] and bomb.name in seen["message"], seen
    assert "more data than the 7,840 bytes" in seen["message"]
    assert seen["rss"] < 100_000_000 and seen["traced"] < 100_000_000, seen


def test_images_of_the_wrong_shape_are_refused_from_the_header_within_100_mb(tmp_path):
    header = bytes([0, 0, 8, 3]) + np.array((1, 32768, 32768), ">u4").tobytes()
    path = write_gzip_bomb(tmp_path, header=header)  # honest: 1 GiB of zeros, as declared
    assert path.stat().st_size < 1_200_000
    seen = load_in_a_probe(tmp_path, f"one 32768x32768 image ({path.stat().st_size:,} bytes)")
    assert seen["message"] == (f"{path}: its header declares dimensions (1, 32768, 32768), items "
                               "of shape (32768, 32768) where (28, 28) is expected."), seen
    assert seen["rss"] < 100_000_000 and seen["traced"] < 100_000_000, seen


def test_a_header_declaring_more_than_the_file_can_hold_is_refused_before_reading(tmp_path):
    make_mnist(tmp_path, n_train=10)
    huge = bytes([0, 0, 8, 3]) + np.array((10**6, 28, 28), ">u4").tobytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(huge + bytes(100)))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz: its header declares "
                                           r"dimensions \(1000000, 28, 28\).*more than the"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(IDX_IMAGES_10 + bytes(7840 + 1))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: more data than the 7,840"):
        load_dataset("mnist", tmp_path)
    assert data.read_idx(tmp_path / "train-labels-idx1-ubyte.gz", ()).shape == (10,)
    with pytest.raises(DatasetError, match="limit of 5"):
        data.read_idx(tmp_path / "train-labels-idx1-ubyte.gz", (), max_bytes=5)


def test_a_symlink_loop_as_the_data_folder_is_one_message(tmp_path):
    loop = tmp_path / "a"
    os.symlink(tmp_path / "b", loop)
    os.symlink(loop, tmp_path / "b")
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", loop)
    assert str(info.value) == (f"The data folder {loop} cannot be opened: Too many levels of "
                               "symbolic links.")
    dataset, note = load_with_fallback("mnist", loop)
    assert dataset.name == "mnist-sample" and "Too many levels of symbolic links" in note
    with pytest.raises(DatasetError, match="not a folder name"):
        load_dataset("mnist", "data\0folder")


def test_permission_and_memory_errors_are_one_message(tmp_path, monkeypatch):
    make_mnist(tmp_path)
    denied = tmp_path / "train-images-idx3-ubyte.gz"

    def no_entry(folder, stem):
        raise PermissionError(13, "Permission denied", str(denied))
    with monkeypatch.context() as patch:
        patch.setattr(data, "_idx_path", no_entry)
        with pytest.raises(DatasetError, match=f"MNIST cannot be read: {denied}: Permission denied"):
            load_dataset("mnist", tmp_path)

    def no_memory(*args):
        raise MemoryError
    with monkeypatch.context() as patch:
        patch.setattr(data, "_make", no_memory)
        with pytest.raises(DatasetError, match="Not enough memory to load MNIST"):
            load_dataset("mnist", tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(data.np, "empty", no_memory)
        with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: not enough memory"):
            load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("sub", ["empty", "does/not/exist"])
def test_no_files_names_the_folder_and_the_files(tmp_path, sub):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", tmp_path / sub)
    message = str(info.value)
    assert str(tmp_path / sub) in message and "train-images-idx3-ubyte" in message
    assert "--data-dir" in message


def test_cifar_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for stem in data.CIFAR_FILES:
        batch = {"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), "labels": [0, 3, 9, 1]}
        if stem == "test_batch":  # keys as bytes too, as pickle.load(encoding="bytes") users write
            batch = {k.encode(): v for k, v in batch.items()}
        (folder / stem).write_bytes(pickle.dumps(batch, protocol=2 if stem.endswith("1") else 4))
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert len(ds.mean) == 3 and ds.train_y.tolist()[:4] == [0, 3, 9, 1]
    assert load_dataset("cifar10", folder).source == f"folder {folder}"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": print}))  # a global: refused
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


def write_tarball(path: Path, members: dict[str, bytes | str | None]) -> Path:
    """A .tar.gz of files (name: bytes), symbolic links (name: target) and folders (name: None)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            member = tarfile.TarInfo(name)
            if content is None:
                member.type = tarfile.DIRTYPE
            elif isinstance(content, str):
                member.type, member.linkname = tarfile.SYMTYPE, content
            else:
                member.size = len(content)
            tar.addfile(member, io.BytesIO(content) if isinstance(content, bytes) else None)
    return path


def cifar_batch() -> bytes:
    return pickle.dumps({"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8),
                         "labels": [0, 3, 9, 1]})


def test_a_cifar_tarball_unpacks_into_its_folder(tmp_path):
    members = {"cifar-10-batches-py": None} | {f"cifar-10-batches-py/{stem}": cifar_batch()
                                              for stem in data.CIFAR_FILES}
    tarball = write_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    assert data._unpack(tarball, tmp_path, "advice") == tmp_path / "cifar-10-batches-py"
    assert not tarball.exists()
    assert (tmp_path / "cifar-10-batches-py/test_batch").read_bytes() == members[
        "cifar-10-batches-py/test_batch"]
    assert load_dataset("cifar10", tmp_path).train_x.shape == (20, 3, 32, 32)


@pytest.mark.parametrize("bad", [
    {"../escaped": b"x"}, {"cifar-10-batches-py/../../escaped": b"x"}, {"TMP/escaped": b"x"},
    {"cifar-10-batches-py/up": "../..", "cifar-10-batches-py/up/escaped": b"x"},
], ids=["dot-dot", "dot-dot-inside", "absolute", "symlink"])
def test_a_tarball_reaching_outside_its_folder_is_refused(tmp_path, bad):
    root = tmp_path / "root"
    root.mkdir()
    bad = {name.replace("TMP", str(tmp_path)): content for name, content in bad.items()}
    tarball = write_tarball(root / "cifar-10-python.tar.gz",
                            {"cifar-10-batches-py/data_batch_1": cifar_batch()} | bad)
    with pytest.raises(DatasetError) as info:
        data._unpack(tarball, root, "advice")
    assert str(info.value).startswith(f"{tarball}: cannot unpack ({next(iter(bad))!r}"), info.value
    assert [p for p in tmp_path.rglob("*") if root not in (p, *p.parents)] == []


def test_download_without_network_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetError, match="--data-dir"):
        download_dataset("mnist", tmp_path, timeout=3.0)
    assert time.monotonic() - start < 15
    assert not list(tmp_path.rglob("*-ubyte*"))


def test_download_from_a_local_server(tmp_path, monkeypatch):
    arrays = make_mnist(tmp_path / "served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path / "served")
    handler.func.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def jobs(name, root, bad=None):
        raw = root / "MNIST" / "raw"
        return [([url + "nope", url + f"{s}.gz"], raw / f"{s}.gz",
                  bad or hashlib.md5((tmp_path / "served" / f"{s}.gz").read_bytes()).hexdigest())
                 for s in data.IDX_FILES], raw

    monkeypatch.setattr(data, "_reachable", lambda name, timeout: True)
    try:
        monkeypatch.setattr(data, "_downloads", functools.partial(jobs, bad="0" * 32))
        with pytest.raises(DatasetError, match="checksum"):
            download_dataset("mnist", tmp_path / "out")
        assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
        monkeypatch.setattr(data, "_downloads", jobs)
        seen = []
        ds = load_dataset("mnist", tmp_path / "out", download=True, progress=seen.append)
    finally:
        server.shutdown()
    assert ds.source == f"downloaded to {tmp_path / 'out' / 'MNIST' / 'raw'}"
    assert ds.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert load_dataset("mnist", tmp_path / "out").source.startswith("folder ")


def test_fallback_to_the_sample(tmp_path):
    ds, note = load_with_fallback("mnist", tmp_path)
    assert ds.name == "mnist-sample" and len(ds.train_y) == 10_000
    # What to do about it is the caller's to say (the CLI: --data-dir; a page: its own buttons).
    assert note == "The full MNIST dataset was not found: the bundled MNIST sample is used instead."
    make_mnist(tmp_path, n_train=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(10, 12))
    ds, note = load_with_fallback("kmnist", tmp_path)
    assert ds.name == "mnist-sample" and "could not be read" in note
    assert load_with_fallback("mnist-sample")[1] is None and load_with_fallback("digits")[1] is None


def test_bundled_sample():
    assert data.SAMPLE_PATH.is_file() and data.SAMPLE_PATH.stat().st_size < 4_000_000
    ds = load_dataset("mnist-sample")
    assert ds.train_x.shape == (10_000, 1, 28, 28) and ds.test_x.shape == (2_000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    for labels, size in ((ds.train_y, 10_000), (ds.test_y, 2_000)):
        counts = torch.bincount(labels, minlength=10)
        assert len(counts) == 10 and counts.min() > 0.8 * size / 10 and counts.max() < 1.2 * size / 10
    assert ds.mean[0] == pytest.approx(0.1307, abs=0.003) and ds.std[0] == pytest.approx(0.3081, abs=0.003)
    assert ds.source == "bundled sample (10,000 train / 2,000 test images)"


def test_digits():
    ds = load_dataset("digits")
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and int(ds.train_x.max()) == 255
    counts = torch.bincount(ds.test_y, minlength=10)  # stratified: 36 +- 1 of each digit
    assert ds.num_classes == 10 and counts.min() >= 34 and counts.max() <= 38
    assert "scikit-learn digits" in ds.source
    assert torch.equal(load_dataset("digits").test_y, ds.test_y)  # the split is fixed


def test_real_mnist():
    folder = next((p for p in REAL_MNIST if p.is_dir()), None)
    if folder is None:
        pytest.skip("the real MNIST folder (../shared/data/mnist) is absent")
    start = time.monotonic()
    ds = load_dataset("mnist", folder)
    elapsed = time.monotonic() - start
    assert ds.train_x.shape == (60_000, 1, 28, 28) and ds.test_x.shape == (10_000, 1, 28, 28)
    assert ds.mean[0] == pytest.approx(0.1307, abs=1e-4) and ds.std[0] == pytest.approx(0.3081, abs=1e-4)
    assert elapsed < 10, elapsed


def test_split_sizes_count_the_images_split_train_draws():
    from dlcore.engine.dataset import split_sizes, split_train
    for num_train, subset, fraction in [(100, 0, 0.0), (100, 0, 0.1), (100, 30, 0.1), (100, 300, 0.2),
                                        (10, 1, 0.5), (10, 2, 0.01), (1, 0, 0.5), (7, 7, 0.5)]:
        split = split_train(num_train, subset, fraction, seed=3)
        assert split_sizes(num_train, subset, fraction) == (len(split.train), len(split.val))
