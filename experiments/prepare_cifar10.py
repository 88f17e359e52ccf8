"""Write CIFAR-10 as the ``.npz`` that ``--data npz:PATH`` reads (``x_train, y_train, x_test, y_test``: uint8
NHWC images, int64 labels), for machines where tensorflow-datasets cannot download it.

    python experiments/prepare_cifar10.py cifar-10-python.tar.gz data/cifar10.npz      # official python version
    python experiments/prepare_cifar10.py cifar-10-binary.tar.gz data/cifar10.npz      # official binary version
    python experiments/prepare_cifar10.py cifar10_images/ data/cifar10.npz             # train/<class>/*.png, test/...

The source is the official archive (as downloaded by hand from the CIFAR-10 page), its extracted folder
(``cifar-10-batches-py`` or ``cifar-10-batches-bin``), or a folder of images with ``train/`` and ``test/``
holding one sub-folder per class (classes numbered in sorted name order over both splits).
``--train-limit N`` keeps the first N training images. The python batches are unpickled by an unpickler that
builds only dicts, lists, bytes, strings, numbers and numeric arrays (nothing in a pickle is imported or called);
the arrays are validated as ``--data npz:PATH`` validates them. Bad input ends with one line on stderr and exit
status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import io
import lzma
import pathlib
import pickle
import re
import sys
import tarfile
import zlib
from collections.abc import Iterator

import numpy as np
from numpy._core.multiarray import _reconstruct
from numpy._core.numeric import _frombuffer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.runtime.input_pipeline import ImageArrays, validate_arrays  # noqa: E402

RECORD = 1 + 32 * 32 * 3  # binary version: label byte, then 1024 red, 1024 green, 1024 blue bytes
SPLIT_FILES = {"train": re.compile(r"data_batch_\d(\.bin)?$"), "test": re.compile(r"test_batch(\.bin)?$")}
BATCH_CONTENTS = "CIFAR-10 batches hold only dicts, lists, bytes, strings, numbers and numeric arrays"


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names something a CIFAR-10 batch never holds."""


def _numeric_dtype(spec: object, *_align_copy: object) -> np.dtype:
    """``numpy.dtype`` limited to NumPy's shared native boolean and number dtypes, whose pickled state NumPy ignores
    (the pickled state of other dtypes, applied as they are unpickled, can claim that they hold objects)."""
    dtype = np.dtype(spec)
    if dtype.kind not in "biuf" or dtype is not np.dtype(dtype.char):
        raise RefusedGlobal(f"refuses to unpickle an array of dtype {dtype} ({BATCH_CONTENTS})")
    return dtype


_NDARRAY = object()  # what ``numpy.ndarray`` unpickles to: only ``_empty_array`` accepts it


def _empty_array(subtype: object, shape: tuple, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct`` for plain ndarrays (protocols 0 to 4): the empty array that the pickle then fills."""
    if subtype is not _NDARRAY:
        raise RefusedGlobal(f"refuses to unpickle an array of type {subtype!r} ({BATCH_CONTENTS})")
    return _reconstruct(np.ndarray, shape, _numeric_dtype(dtype))


def _array_from_buffer(buffer: object, dtype: object, shape: tuple, order: str, *axis_order: object) -> np.ndarray:
    """numpy's ``_frombuffer`` (protocol 5) for numeric dtypes."""
    return _frombuffer(buffer, _numeric_dtype(dtype), shape, order, *axis_order)


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes into protocol-2 pickles: latin-1 only."""
    if encoding != "latin1":
        raise RefusedGlobal(f"refuses to unpickle _codecs.encode with encoding {encoding!r} ({BATCH_CONTENTS})")
    return text.encode("latin1")


# The globals that numpy arrays and bytes pickle with (Python 2's cPickle wrote the official batches with
# numpy.core; NumPy 2 writes numpy._core), each mapped to a checked stand-in.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1,
}


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch (``encoding="bytes"``, as Python 2 wrote it); any global outside
    ``SAFE_GLOBALS`` is refused before it is imported, so nothing in the pickle runs."""

    def __init__(self, blob: bytes) -> None:
        super().__init__(io.BytesIO(blob), encoding="bytes")

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in SAFE_GLOBALS:
            raise RefusedGlobal(f"refuses to unpickle {module}.{name} ({BATCH_CONTENTS})")
        return SAFE_GLOBALS[module, name]


def _split_of(name: str) -> str | None:
    """``"train"`` or ``"test"`` for the file name of a batch, else None."""
    return next((split for split, pattern in SPLIT_FILES.items() if pattern.match(name)), None)


def _to_nhwc(planar: np.ndarray) -> np.ndarray:
    """[N, 3072] channel-planar rows (the archives' layout) -> [N, 32, 32, 3]."""
    return planar.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(":")[:160]


def _batch(name: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one batch file of either official version, in the dtypes stored (checked later)."""
    if name.endswith(".bin"):
        records = np.frombuffer(blob, np.uint8)
        if records.size % RECORD:
            raise ValueError(f"{name} is not a CIFAR-10 binary batch ({records.size} bytes)")
        records = records.reshape(-1, RECORD)
        return _to_nhwc(records[:, 1:]), records[:, 0]
    try:
        batch = BatchUnpickler(blob).load()
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except RefusedGlobal as err:
        raise ValueError(f"{name}: {err}") from None
    except Exception as err:  # unpickling arbitrary bytes can raise almost any exception type
        raise ValueError(f"{name} is not a CIFAR-10 python batch ({type(err).__name__}: {_first_line(err)})") from None
    if data.ndim != 2 or data.shape[1] != RECORD - 1:
        raise ValueError(f"{name}: b'data' must be [N, {RECORD - 1}] channel-planar rows, got shape {data.shape}")
    if labels.shape != data.shape[:1]:
        raise ValueError(f"{name}: {len(data)} images need as many labels, b'labels' has shape {labels.shape}")
    return _to_nhwc(data), labels


def _batch_files(source: pathlib.Path) -> Iterator[tuple[str, bytes]]:
    """``(file name, bytes)`` of each batch file of an official archive or its extracted folder; the archive's
    members are read one at a time and only the batches are extracted."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and _split_of(path.name):
                yield path.name, path.read_bytes()
        return
    with tarfile.open(source, "r:*") as archive:
        for member in archive:
            name = pathlib.PurePosixPath(member.name).name
            if member.isfile() and _split_of(name):
                yield name, archive.extractfile(member).read()
        archive.fileobj.read()  # to the end, where gzip and xz check their checksums


def _official(source: pathlib.Path) -> dict[str, np.ndarray]:
    """The four arrays from an official archive or its extracted folder, batches in name order."""
    parts: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {split: [] for split in SPLIT_FILES}
    try:
        for name, blob in _batch_files(source):
            parts[_split_of(name)].append((name, *_batch(name, blob)))
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        fix = "pass the official archive or its extracted folder"
        raise ValueError(f"cannot read {source} ({_first_line(err)}); {fix}") from None
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    arrays = {}
    for split, batches in parts.items():
        if not batches:
            raise ValueError(f"{source} holds no {split} batches ({SPLIT_FILES[split].pattern})")
        batches.sort(key=lambda batch: batch[0])
        arrays[f"x_{split}"] = np.concatenate([x for _, x, _ in batches])
        arrays[f"y_{split}"] = np.concatenate([y for _, _, y in batches])
    return arrays


def _image_folder(source: pathlib.Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of an image folder."""
    from PIL import Image

    folders = [(c, source / split / name) for c, name in enumerate(classes) if (source / split / name).is_dir()]
    paths = [(p, c) for c, folder in folders for p in sorted(folder.iterdir()) if p.is_file()]
    if not paths:
        raise ValueError(f"{source / split} holds no images")
    images = [np.asarray(Image.open(p).convert("RGB")) for p, _ in paths]
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"the images under {source / split} differ in size; resize them to one size first")
    return np.stack(images), np.array([c for _, c in paths], np.int64)


def _image_folders(source: pathlib.Path) -> dict[str, np.ndarray]:
    """The four arrays from ``train/<class>/`` and ``test/<class>/``, classes numbered in sorted name order."""
    splits = [source / "train", source / "test"]
    classes = sorted({p.name for split in splits if split.is_dir() for p in split.iterdir() if p.is_dir()})
    if not classes:
        raise ValueError(f"{source} has no class sub-folders under train/ and test/")
    return {f"{a}_{split}": v for split in ("train", "test")
            for a, v in zip("xy", _image_folder(source, split, classes), strict=True)}  # fmt: skip


def read_cifar10(source: pathlib.Path, train_limit: int | None = None) -> dict[str, np.ndarray]:
    """The four arrays from any supported source, the first ``train_limit`` training images, validated as
    ``--data npz:PATH`` validates them (labels as int64); ValueError names what is wrong."""
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"--train-limit must be a positive integer, got {train_limit}")
    if not source.exists():
        raise ValueError(f"{source} does not exist; pass the CIFAR-10 archive, its folder or an image folder")
    arrays = _image_folders(source) if source.is_dir() and (source / "train").is_dir() else _official(source)
    if train_limit is not None:
        arrays.update(x_train=arrays["x_train"][:train_limit], y_train=arrays["y_train"][:train_limit])
    validate_arrays(ImageArrays(**arrays), str(source))
    return {key: value.astype(np.int64) if key.startswith("y_") else value for key, value in arrays.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=pathlib.Path, help="official archive, its extracted folder, or image folder")
    parser.add_argument("out", type=pathlib.Path, help="the .npz to write")
    parser.add_argument("--train-limit", type=int, help="keep only the first N training images (N >= 1)")
    args = parser.parse_args(argv)
    try:
        arrays = read_cifar10(args.source, args.train_limit)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, **arrays)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(arrays['y_train'])} train, {len(arrays['y_test'])} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
