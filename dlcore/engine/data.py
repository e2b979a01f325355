"""The dataset registry and its loaders: a named folder, the cache, a download, or what ships inside.

Torchvision's datasets (MNIST, Fashion-MNIST, KMNIST, CIFAR-10) are read from a folder the user
names, then from the cache (`default_data_dir()`), then, only when asked, from a download with
torchvision's urls, mirrors and md5 check. Its readers and downloader would drop guarantees kept
here, so those are ours (each says which). scikit-learn's 8x8 digits and a bundled 10,000/2,000
MNIST sample are always there. Nothing is cached in module globals.
"""

from __future__ import annotations

import codecs
import gzip
import http.client
import io
import math
import os
import pickle
import socket
import tarfile
import threading
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from dlcore.engine.dataset import Dataset, DatasetError
from dlcore.engine.paths import home_dir

__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetInfo", "default_data_dir",
           "download_dataset", "load_dataset", "load_with_fallback", "read_idx"]

Progress = Callable[[float], None]
SAMPLE_PATH = Path(__file__).parents[1] / "samples" / "mnist_sample.npz"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
MAX_IDX_BYTES = 1 << 30  # one IDX file's data (MNIST's largest holds 47 MB)
GZIP_RATIO = 1100        # deflate expands at most ~1032:1, so a .gz file of n bytes holds < 1100 n
IDX_CHUNK = 1 << 20      # bytes decompressed at a time


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, before loading it: its classes and image shape (C, H, W)."""

    name: str
    title: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    downloadable: bool


_MNIST_CLASSES = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
                  "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine")
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("mnist", "MNIST", _MNIST_CLASSES, (1, 28, 28), True),
    DatasetInfo("fashion-mnist", "Fashion-MNIST", (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), (1, 28, 28), True),
    DatasetInfo("kmnist", "KMNIST (Kuzushiji)",
                ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), (1, 28, 28), True),
    DatasetInfo("cifar10", "CIFAR-10", (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck"), (3, 32, 32), True),
    DatasetInfo("digits", "scikit-learn digits (8x8)", tuple(str(d) for d in range(10)), (1, 8, 8), False),
    DatasetInfo("mnist-sample", "MNIST sample (bundled)", _MNIST_CLASSES, (1, 28, 28), False),
)}
# torchvision's folder under the root (<root>/MNIST/raw) and its class, for the download.
_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST",
                "cifar10": "CIFAR10"}
# Hosts and ports of torchvision's urls, probed before its slow import so no network fails fast.
_HOSTS = {"mnist": (("ossci-datasets.s3.amazonaws.com", 443), ("yann.lecun.com", 80)),
          "fashion-mnist": (("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),),
          "kmnist": (("codh.rois.ac.jp", 80),), "cifar10": (("www.cs.toronto.edu", 443),)}


class _NotFound(DatasetError):
    """No files of the dataset anywhere we looked (as opposed to files that are broken)."""


def default_data_dir() -> Path:
    """$DLLAB_HOME/data, with DLLAB_HOME defaulting to ~/.dllab."""
    return home_dir() / "data"


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DatasetError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    return DATASETS[name]


# ---------------------------------------------------------------- file formats

# Not torchvision's read_sn3_pascalvincent_tensor: it reads only uncompressed files, and whole.
def read_idx(path: Path, item_shape: tuple[int, ...], max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """One IDX file (plain or .gz) of unsigned bytes: N items of `item_shape`, fully validated.

    The header is read first and refused when its items are not of `item_shape`; the data it
    declares (at most `max_bytes`, and no more than the file could hold) goes straight into one
    preallocated array as the file streams, and a file holding more or less than that is refused:
    a gzip bomb costs no more memory than an honest file."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            packed = file.read(2) == b"\x1f\x8b"
            file.seek(0)
            stream = gzip.GzipFile(fileobj=file, mode="rb") if packed else file
            return _read_idx_stream(stream, path, item_shape, size, packed, max_bytes)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({exc}).") from None
    except MemoryError:
        raise DatasetError(f"{path}: not enough memory to read it.") from None


def _read_idx_stream(stream: BinaryIO, path: Path, item_shape: tuple[int, ...], size: int,
                     packed: bool, max_bytes: int) -> np.ndarray:
    ndim = 1 + len(item_shape)
    magic = stream.read(4)
    if len(magic) < 4 or magic[:3] != b"\0\0\x08" or magic[3] != ndim:
        raise DatasetError(f"{path}: not an IDX file of {ndim}-d unsigned bytes "
                           f"(magic {magic.hex() or 'missing'}, expected 000008{ndim:02x}).")
    header = stream.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DatasetError(f"{path}: the header ends after {4 + len(header)} bytes (truncated).")
    dims = tuple(int(d) for d in np.frombuffer(header, ">u4"))
    if dims[1:] != tuple(item_shape):
        raise DatasetError(f"{path}: its header declares dimensions {dims}, items of shape "
                           f"{dims[1:]} where {tuple(item_shape)} is expected.")
    expected = math.prod(dims)
    room = size * GZIP_RATIO if packed else size - 4 - 4 * ndim
    if expected > room or expected > max_bytes:
        limit = (f"more than the limit of {max_bytes:,}" if expected > max_bytes
                 else f"more than the {size:,}-byte file can hold")
        raise DatasetError(f"{path}: its header declares dimensions {dims}, {expected:,} data "
                           f"bytes, {limit} (truncated or corrupt).")
    array, filled = np.empty(expected, np.uint8), 0
    while filled < expected and (n := stream.readinto(array[filled:filled + IDX_CHUNK])):
        filled += n
    if filled < expected:
        raise DatasetError(f"{path}: {filled:,} data bytes for dimensions {dims}, expected "
                           f"{expected:,} (truncated or corrupt).")
    if stream.read(1):  # one buffer more is decompressed, never the rest
        raise DatasetError(f"{path}: more data than the {expected:,} bytes its header's "
                           f"dimensions {dims} declare (corrupt, or a decompression bomb).")
    return array.reshape(dims)


def _idx_path(folder: Path, stem: str) -> Path | None:
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _read_mnist_like(folder: Path, info: DatasetInfo) -> tuple[np.ndarray, ...]:
    paths = [_idx_path(folder, stem) for stem in IDX_FILES]
    for stem, path in zip(IDX_FILES, paths, strict=True):
        if path is None:
            raise DatasetError(f"{folder / stem}(.gz) is missing; {info.title} needs "
                               f"{', '.join(IDX_FILES)} (plain or .gz) together in {folder}.")
    out = []
    for img_path, lab_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        images, labels = read_idx(img_path, info.shape[1:]), read_idx(lab_path, ())
        _check_labels(labels, len(images), info, lab_path, img_path)
        out += [images[:, None], labels]
    return tuple(out)


def _check_labels(labels: np.ndarray, count: int, info: DatasetInfo, path: Path, images: Path) -> None:
    if count == 0:
        raise DatasetError(f"{images}: holds no images.")
    if len(labels) != count:
        raise DatasetError(f"{path}: {len(labels)} labels but {images.name} holds {count} images.")
    if len(labels) and int(labels.max()) >= len(info.classes):
        raise DatasetError(f"{path}: label {int(labels.max())} out of range 0..{len(info.classes) - 1}.")


# Not torchvision's CIFAR10: it unpickles batches with pickle.load, which can run code.
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: dicts, lists and numpy arrays, nothing that can run code."""

    def find_class(self, module: str, name: str) -> object:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # how Python 3's protocol 2 writes bytes
            return codecs.encode
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_cifar(folder: Path, info: DatasetInfo) -> tuple[np.ndarray, ...]:
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for stem in CIFAR_FILES:
        path = folder / stem
        try:
            batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = np.asarray(batch["labels"], dtype=np.int64)
        except FileNotFoundError:
            raise DatasetError(f"{path} is missing; CIFAR-10 needs {', '.join(CIFAR_FILES)} "
                               f"together in {folder}.") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same refusal
            raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc}).") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{path}: data of shape {data.shape}, expected (N, 3072).")
        _check_labels(labels, len(data), info, path, path)  # (data and labels share the file)
        parts[stem] = (data.reshape(-1, 3, 32, 32), labels)
    train = [parts[s] for s in CIFAR_FILES[:-1]]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            *parts["test_batch"])


def _locate(name: str, root: Path, flat: bool) -> Path | None:
    """The folder under `root` holding some of the dataset's files: torchvision's layout, or `root`
    itself when `flat` (not for the cache, which several datasets with the same file names share)."""
    if name == "cifar10":
        candidates = [root / CIFAR_FOLDER] + [root] * flat
        return next((c for c in candidates if any((c / f).is_file() for f in CIFAR_FILES)), None)
    candidates = [root / _TORCHVISION[name] / "raw", root / _TORCHVISION[name]] + [root] * flat
    return next((c for c in candidates if any(_idx_path(c, s) for s in IDX_FILES)), None)


def _make(info: DatasetInfo, arrays: tuple[np.ndarray, ...], source: str) -> Dataset:
    train_x, train_y, test_x, test_y = arrays
    mean, std, values = [], [], np.arange(256) / 255.0
    for c in range(train_x.shape[1]):  # exact moments from a 256-bin histogram: fast, no float copy
        p = np.bincount(np.ascontiguousarray(train_x[:, c]).ravel(), minlength=256) / train_x[:, c].size
        mean.append(float(p @ values))
        std.append(float(np.sqrt(p @ (values - mean[-1]) ** 2)))

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.array(a, copy=True)).to(dtype)
    return Dataset(info.name, tensor(train_x, torch.uint8), tensor(train_y, torch.int64),
                   tensor(test_x, torch.uint8), tensor(test_y, torch.int64),
                   info.classes, tuple(mean), tuple(std), source)


def _load_from(info: DatasetInfo, root: Path, label: str) -> Dataset | None:
    folder = _locate(info.name, root, flat=label != "cache")
    if folder is None:
        return None
    reader = _read_cifar if info.name == "cifar10" else _read_mnist_like
    return _make(info, reader(folder, info), f"{label} {folder}")


def _expected(name: str) -> str:
    if name == "cifar10":
        return f"{', '.join(CIFAR_FILES)} in FOLDER/{CIFAR_FOLDER} or in FOLDER itself"
    return f"{', '.join(IDX_FILES)} (plain or .gz) in FOLDER/{_TORCHVISION[name]}/raw or in FOLDER itself"


# ---------------------------------------------------------------- always-there datasets

def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.round(bunch.data * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    return _make(DATASETS["digits"], (tr_x, tr_y, te_x, te_y),
                 f"scikit-learn digits ({len(tr_x):,} train / {len(te_x):,} test images)")


def _load_sample(path: Path = SAMPLE_PATH) -> Dataset:
    info = DATASETS["mnist-sample"]
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = tuple(npz[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    except Exception as exc:  # noqa: BLE001 - a missing or broken sample is one refusal
        raise DatasetError(f"{path}: bundled sample unreadable ({exc}); rebuild it with "
                           "scripts/build_mnist_sample.py.") from None
    for x, y in (arrays[:2], arrays[2:]):
        if x.dtype != np.uint8 or x.shape[1:] != info.shape[1:] or len(x) != len(y) or y.max() >= 10:
            raise DatasetError(f"{path}: bundled sample has unexpected arrays {x.shape}/{y.shape}.")
    tr_x, tr_y, te_x, te_y = arrays
    return _make(info, (tr_x[:, None], tr_y, te_x[:, None], te_y),
                 f"bundled sample ({len(tr_x):,} train / {len(te_x):,} test images)")


# ---------------------------------------------------------------- public API

def load_dataset(name: str, data_dir: str | Path | None = None, *, download: bool = False,
                 timeout: float = 5.0, progress: Progress | None = None) -> Dataset:
    """Load `name` from `data_dir`, then the cache, then (if `download`) the network.

    Broken files raise DatasetError naming the file; finding nothing raises one naming the
    folders searched and the files expected there.
    """
    info = _info(name)
    try:
        return _load(info, data_dir, download, timeout, progress)
    except MemoryError:
        raise DatasetError(f"Not enough memory to load {info.title}.") from None
    except OSError as exc:  # a file or folder that cannot be opened (permission, a link loop, ...)
        raise DatasetError(f"{info.title} cannot be read: {_os_reason(exc)}.") from None


def _os_reason(exc: OSError) -> str:
    """An OSError in words, with the file it names and without a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _check_folder(folder: Path) -> None:
    """A folder the user named that exists but cannot be opened (a symbolic link loop, no
    permission) is refused in words; one that does not exist is said with the places searched."""
    try:
        folder.stat()
    except (FileNotFoundError, NotADirectoryError):
        return
    except ValueError:  # an embedded NUL character
        raise DatasetError(f"{str(folder)!r} is not a folder name.") from None
    except OSError as exc:
        raise DatasetError(f"The data folder {folder} cannot be opened: "
                           f"{exc.strerror or exc}.") from None


def _load(info: DatasetInfo, data_dir: str | Path | None, download: bool, timeout: float,
          progress: Progress | None) -> Dataset:
    name = info.name
    if name == "digits":
        return _load_digits()
    if name == "mnist-sample":
        return _load_sample()
    cache = default_data_dir()
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    if folder is not None:
        _check_folder(folder)
    same = folder is not None and os.path.realpath(folder) == os.path.realpath(cache)
    places = [(folder, "folder")] if folder and not same else []
    places.append((cache, "cache"))
    for root, label in places:
        if (dataset := _load_from(info, root, label)) is not None:
            return dataset
    if download:
        root = download_dataset(name, places[0][0], timeout=timeout, progress=progress)
        if (dataset := _load_from(info, root, "downloaded to")) is not None:
            return dataset
    searched = " or ".join(f"{label} {root}" + ("" if root.is_dir() else " (does not exist)")
                           for root, label in places)
    raise _NotFound(f"No {info.title} files found in {searched}. Expected {_expected(name)}. "
                    "Put the files in a folder and pass --data-dir FOLDER, or download them "
                    "(the download button, or download=True).")


def load_with_fallback(name: str, data_dir: str | Path | None = None) -> tuple[Dataset, str | None]:
    """`load_dataset(name, data_dir)`, or the bundled MNIST sample and a note saying why."""
    info = _info(name)
    try:
        return load_dataset(name, data_dir), None
    except DatasetError as exc:
        if not info.downloadable:
            raise
        problem = "was not found" if isinstance(exc, _NotFound) else f"could not be read ({exc})"
    return _load_sample(), (f"The full {info.title} dataset {problem}: the bundled MNIST sample is "
                            "used instead.")


def has_files(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether `name` can be loaded without a download: always for the bundled ones, else when its
    files are in `data_dir` or the cache (found by name only: a broken file still counts)."""
    info = _info(name)
    if not info.downloadable:
        return True
    roots = [(default_data_dir(), False)]
    if data_dir:
        roots.insert(0, (Path(data_dir).expanduser(), True))
    try:
        return any(_locate(name, root, flat) is not None for root, flat in roots)
    except (OSError, ValueError):
        return False


def choice_label(name: str, data_dir: str | Path | None = None) -> str:
    """How a dataset selector names `name`: its title, and "not downloaded" when its files are
    not on this machine (choosing it then trains on the bundled sample, said where it is used)."""
    title = DATASETS[name].title if name in DATASETS else name
    return title if has_files(name, data_dir) else f"{title} (not downloaded)"


# What a command-line user can do about load_with_fallback's note (a page says it in its own words).
CLI_FALLBACK_HINT = "To use the full dataset, pass --data-dir with a folder holding its files."


def _downloads(name: str, root: Path) -> tuple[list[tuple[list[str], Path, str]], Path]:
    """[(candidate urls, destination, md5)] from torchvision's own tables, and the folder to read."""
    import torchvision.datasets as tvd

    klass = getattr(tvd, _TORCHVISION[name])
    if name == "cifar10":
        return [([klass.url], root / klass.filename, klass.tgz_md5)], root
    raw = root / _TORCHVISION[name] / "raw"
    return [([m + f for m in klass.mirrors], raw / f, md5) for f, md5 in klass.resources], raw


def _reachable(name: str, timeout: float) -> bool:
    """Whether a download server of `name` takes a connection within `timeout` seconds in all."""
    ok = threading.Event()

    def probe(address: tuple[str, int]) -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            ok.set()
        except OSError:
            pass
    threads = [threading.Thread(target=probe, args=(a,), daemon=True) for a in _HOSTS[name]]
    for t in threads:
        t.start()
    for t in threads:  # DNS can ignore socket timeouts: a hung probe thread is simply abandoned
        t.join(timeout)
        if ok.is_set():
            return True
    return ok.is_set()


# Not torchvision's download_url: it has no timeout, reports to tqdm, and writes the file in place.
def _fetch(url: str, part: Path, md5: str, timeout: float, report: Progress) -> None:
    from torchvision.datasets.utils import calculate_md5

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total, done = int(response.headers.get("Content-Length") or 0), 0
            while chunk := response.read(1 << 16):
                done += out.write(chunk)
                report(done / total if total else 0.0)
        if calculate_md5(part) != md5:
            raise OSError(f"checksum mismatch for {part.name}")
    except (OSError, http.client.HTTPException):
        part.unlink(missing_ok=True)
        raise


def download_dataset(name: str, data_dir: str | Path | None = None, *, timeout: float = 5.0,
                     progress: Progress | None = None) -> Path:
    """Download `name` with torchvision's urls and checksums into `data_dir` (default: the cache).

    Fails within about `timeout` seconds when there is no network. Returns the folder to load from.
    """
    info = _info(name)
    if not info.downloadable:
        raise DatasetError(f"{info.title} is not downloadable; it is always available.")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    advice = (f"put the files ({_expected(name)}) in a folder and pass --data-dir FOLDER, "
              f"or copy them into {default_data_dir()}")
    if not _reachable(name, timeout):  # checked before importing torchvision, which is slow
        raise DatasetError(f"No network: cannot reach the {info.title} download servers. "
                           f"Download the files on a machine with internet access, then {advice}.")
    jobs, folder = _downloads(name, root)
    report = progress or (lambda fraction: None)
    report(0.0)
    parts = []  # every file lands as .part first, so a failed download leaves nothing half-there
    for i, (urls, dest, md5) in enumerate(jobs):
        dest.parent.mkdir(parents=True, exist_ok=True)
        parts.append(dest.with_name(dest.name + ".part"))
        errors = []
        for url in urls:
            try:
                _fetch(url, parts[-1], md5, timeout, lambda f, i=i: report((i + f) / len(jobs)))
                break
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{url}: {exc}")
        else:
            for part in parts:
                part.unlink(missing_ok=True)
            raise DatasetError(f"Download of {info.title} failed ({'; '.join(errors)}); {advice}.")
    for part, (_, dest, _) in zip(parts, jobs, strict=True):
        part.replace(dest)
    if name == "cifar10":
        folder = _unpack(jobs[0][1], root, advice)
    report(1.0)
    return folder


def _inside(member: tarfile.TarInfo, root: Path) -> tarfile.TarInfo:
    """`member` if it is a plain file or folder named relative to `root` and without '..'."""
    name = Path(member.name)
    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
        raise tarfile.TarError(f"{member.name!r} is not a file or folder inside {root}")
    return member


# Not torchvision's extract_archive: it sets no tar filter, so before Python 3.14 '../' entries,
# absolute paths and links are written where they point. The data filter only strips an absolute
# path's leading '/' and is missing before Python 3.11.4, hence `_inside` as well.
def _unpack(tarball: Path, root: Path, advice: str) -> Path:
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(root, members=(_inside(m, root) for m in tar),
                           **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except (OSError, tarfile.TarError) as exc:
        raise DatasetError(f"{tarball}: cannot unpack ({exc}); {advice}.") from None
    tarball.unlink()
    return root / CIFAR_FOLDER
