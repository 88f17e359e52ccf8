"""Write CIFAR-10 as the ``.npz`` that ``--data npz:PATH`` reads (``x_train, y_train, x_test, y_test``: uint8
NHWC images, int64 labels), for machines where tensorflow-datasets cannot download it.

    python experiments/prepare_cifar10.py cifar-10-python.tar.gz data/cifar10.npz      # official python version
    python experiments/prepare_cifar10.py cifar-10-binary.tar.gz data/cifar10.npz      # official binary version
    python experiments/prepare_cifar10.py cifar10_images/ data/cifar10.npz             # train/<class>/*.png, test/...

The source is the official archive (as downloaded by hand from the CIFAR-10 page), its extracted folder
(``cifar-10-batches-py`` or ``cifar-10-batches-bin``), or a folder of images with ``train/`` and ``test/``
holding one sub-folder per class (classes numbered in sorted name order over both splits).
``--train-limit N`` keeps the first N training images. Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import pickle
import re
import sys
import tarfile

import numpy as np

RECORD = 1 + 32 * 32 * 3  # binary version: label byte, then 1024 red, 1024 green, 1024 blue bytes
SPLIT_FILES = {"train": re.compile(r"data_batch_\d(\.bin)?$"), "test": re.compile(r"test_batch(\.bin)?$")}


def _to_nhwc(planar: np.ndarray) -> np.ndarray:
    """[N, 3072] channel-planar rows (the archives' layout) -> [N, 32, 32, 3]."""
    return planar.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _batch(name: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one batch file of either official version."""
    if name.endswith(".bin"):
        records = np.frombuffer(blob, np.uint8)
        if records.size % RECORD:
            raise ValueError(f"{name} is not a CIFAR-10 binary batch ({records.size} bytes)")
        records = records.reshape(-1, RECORD)
        return _to_nhwc(records[:, 1:]), records[:, 0].astype(np.int64)
    batch = pickle.loads(blob, encoding="bytes")  # the official python version is pickled numpy batches
    return _to_nhwc(np.asarray(batch[b"data"], np.uint8)), np.asarray(batch[b"labels"], np.int64)


def _batch_files(source: pathlib.Path) -> dict[str, list[tuple[str, bytes]]]:
    """``{split: [(file name, bytes), ...]}`` from an official archive or its extracted folder, sorted by name."""
    if source.is_dir():
        files = [(p.name, p.read_bytes()) for p in source.rglob("*") if p.is_file()]
    else:
        with tarfile.open(source) as archive:
            files = [(pathlib.Path(m.name).name, archive.extractfile(m).read()) for m in archive if m.isfile()]
    return {split: sorted(f for f in files if pattern.match(f[0])) for split, pattern in SPLIT_FILES.items()}


def _image_folder(source: pathlib.Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    folders = [(c, source / split / name) for c, name in enumerate(classes) if (source / split / name).is_dir()]
    paths = [(p, c) for c, folder in folders for p in sorted(folder.iterdir()) if p.is_file()]
    if not paths:
        raise ValueError(f"{source / split} holds no images")
    images = [np.asarray(Image.open(p).convert("RGB")) for p, _ in paths]
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"the images under {source / split} differ in size; resize them to one size first")
    return np.stack(images), np.array([c for _, c in paths], np.int64)


def read_cifar10(source: pathlib.Path) -> dict[str, np.ndarray]:
    """The four arrays from any supported source; ValueError names what is wrong."""
    if not source.exists():
        raise ValueError(f"{source} does not exist; pass the CIFAR-10 archive, its folder or an image folder")
    if source.is_dir() and (source / "train").is_dir():
        splits = [source / "train", source / "test"]
        classes = sorted({p.name for split in splits if split.is_dir() for p in split.iterdir() if p.is_dir()})
        if not classes:
            raise ValueError(f"{source} has no class sub-folders under train/ and test/")
        return {f"{a}_{split}": v for split in ("train", "test")
                for a, v in zip("xy", _image_folder(source, split, classes), strict=True)}  # fmt: skip
    try:
        files = _batch_files(source)
    except (tarfile.TarError, OSError) as err:
        reason = str(err).splitlines()[0].rstrip(":")
        fix = "pass the official archive or its extracted folder"
        raise ValueError(f"cannot read {source} ({reason}); {fix}") from None
    arrays = {}
    for split, batches in files.items():
        if not batches:
            raise ValueError(f"{source} holds no {split} batches ({SPLIT_FILES[split].pattern})")
        try:
            parts = [_batch(name, blob) for name, blob in batches]
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as err:
            raise ValueError(f"{source}: a {split} batch is not a CIFAR-10 batch ({type(err).__name__})") from None
        arrays[f"x_{split}"] = np.concatenate([x for x, _ in parts])
        arrays[f"y_{split}"] = np.concatenate([y for _, y in parts])
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=pathlib.Path, help="official archive, its extracted folder, or image folder")
    parser.add_argument("out", type=pathlib.Path, help="the .npz to write")
    parser.add_argument("--train-limit", type=int, help="keep only the first N training images")
    args = parser.parse_args(argv)
    try:
        arrays = read_cifar10(args.source)
        if args.train_limit is not None:
            arrays["x_train"], arrays["y_train"] = (
                arrays["x_train"][: args.train_limit],
                arrays["y_train"][: args.train_limit],
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, **arrays)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(arrays['y_train'])} train, {len(arrays['y_test'])} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
