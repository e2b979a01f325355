"""Build dlcore/samples/mnist_sample.npz: a stratified 10,000 train / 2,000 test sample of MNIST.

    python -m scripts.build_mnist_sample [--source ../shared/data/mnist] [--out PATH]

The source folder holds the four IDX files (plain or .gz). Each split is sampled separately with
class proportions kept (scikit-learn's stratified split, random_state 0) and original order. The
npz holds uint8 train_x (N, 28, 28), train_y (N,), test_x, test_y, zlib-compressed, with fixed
zip timestamps so rebuilding from the same files gives the same bytes.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from dlcore.engine.data import DATASETS, SAMPLE_PATH, _read_mnist_like

ROOT = Path(__file__).resolve().parents[1]


def stratified(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`size` rows of (x, y) with y's class proportions, in their original order."""
    keep, _ = train_test_split(np.arange(len(y)), train_size=size, stratify=y, random_state=0)
    keep = np.sort(keep)
    return x[keep], y[keep]


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but byte-for-byte reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=SAMPLE_PATH)
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    args = parser.parse_args(argv)
    train_x, train_y, test_x, test_y = _read_mnist_like(args.source, DATASETS["mnist"])
    train_x, train_y = stratified(train_x[:, 0], train_y, args.train)
    test_x, test_y = stratified(test_x[:, 0], test_y, args.test)
    save_npz(args.out, {"train_x": train_x, "train_y": train_y.astype(np.uint8),
                        "test_x": test_x, "test_y": test_y.astype(np.uint8)})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          f"{len(train_y):,} train, {len(test_y):,} test; train per class "
          f"{np.bincount(train_y, minlength=10).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
