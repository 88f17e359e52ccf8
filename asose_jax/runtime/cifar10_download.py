"""CIFAR-10 without TensorFlow: the official archives read into arrays, and ``--data cifar10``, which downloads
the official python archive once, verifies it and keeps the arrays as an ``.npz`` in the data directory.

Readers: the official python version (``cifar-10-python.tar.gz``) and binary version (``cifar-10-binary.tar.gz``),
each as its archive or extracted folder, and folders of images (``train/<class>/*.png``, ``test/<class>/...``).
The python batches are unpickled by an unpickler that builds only dicts, lists, bytes, strings, numbers and numeric
arrays (nothing in a pickle is imported or called). ``experiments/prepare_cifar10.py`` is the command line of
``read_cifar10``.

``load_cifar10`` reads ``DIR/cifar10.npz`` (``DIR``: ``--data-dir``, default ``~/.cache/asose_jax``). Without it,
it takes ``DIR/cifar-10-python.tar.gz`` if someone put the archive there, else downloads it (163 MB) from the
CIFAR-10 page; the archive's size, MD5 and SHA-256 are checked before it is read, a downloaded archive is deleted
once converted, and the ``.npz`` appears only complete (written under a temporary name, then renamed). Its images
are in the order tensorflow-datasets gives them (``tfds_order``), so ``--data cifar10`` and ``--data tfds`` read
the same arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import io
import lzma
import os
import pathlib
import pickle
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from typing import IO

import numpy as np
from numpy._core.multiarray import _reconstruct
from numpy._core.numeric import _frombuffer

from asose_jax.runtime import input_pipeline
from asose_jax.runtime.input_pipeline import ImageArrays, load_npz, validate_arrays
from asose_jax.runtime.progress import Progress

RECORD = 1 + 32 * 32 * 3  # binary version: label byte, then 1024 red, 1024 green, 1024 blue bytes
SPLIT_FILES = {"train": re.compile(r"data_batch_\d(\.bin)?$"), "test": re.compile(r"test_batch(\.bin)?$")}
BATCH_CONTENTS = "CIFAR-10 batches hold only dicts, lists, bytes, strings, numbers and numeric arrays"


@dataclasses.dataclass(frozen=True)
class Archive:
    """Where an archive is downloaded from, and its size and digests."""

    url: str
    size: int
    md5: str
    sha256: str

    @property
    def file_name(self) -> str:
        return pathlib.PurePosixPath(urllib.parse.urlparse(self.url).path).name


# The MD5 is the one the CIFAR-10 page (https://www.cs.toronto.edu/~kriz/cifar.html) gives; the size and SHA-256
# are those that Keras's and torchvision's CIFAR-10 loaders check.
CIFAR10_PYTHON = Archive(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    size=170_498_071,
    md5="c58f30108f718f92721af3b95e74349a",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
CACHE_FILE = "cifar10.npz"  # the arrays of --data cifar10, in the data directory
DOWNLOAD_CHUNK = 1 << 20  # bytes per read of the download
DOWNLOAD_TIMEOUT_S = 60.0  # per connection attempt and per read


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


def save_npz(arrays: dict[str, np.ndarray], out: pathlib.Path) -> None:
    """Writes ``arrays`` to ``out`` under a temporary name in its folder, then renames it: a reader never sees
    a partial file, and processes writing the same file at once do not mix their bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _temporary(out.parent, out.name) as part:
        with part.open("wb") as stream:
            np.savez(stream, **arrays)
        os.replace(part, out)


@contextlib.contextmanager
def _temporary(folder: pathlib.Path, name: str) -> Iterator[pathlib.Path]:
    """A fresh path ``folder/.name.*.part``, deleted on the way out unless it was renamed."""
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    os.close(handle)
    try:
        yield pathlib.Path(path)
    finally:
        pathlib.Path(path).unlink(missing_ok=True)


def default_data_dir() -> pathlib.Path:
    """Where ``--data cifar10`` keeps its file without ``--data-dir``: ``$XDG_CACHE_HOME/asose_jax``, by default
    ``~/.cache/asose_jax``."""
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "asose_jax"


def load_cifar10(
    data_dir: str | pathlib.Path | None = None, train_limit: int | None = None, archive: Archive = CIFAR10_PYTHON
) -> ImageArrays:
    """CIFAR-10 from ``data_dir/cifar10.npz``, made on first use from the official python archive (downloaded
    unless ``data_dir`` holds it); every failure is one ValueError naming the fix."""
    folder = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
    cached = folder / CACHE_FILE
    if not cached.is_file():
        _make_cache(folder, archive)
    try:
        return load_npz(cached, train_limit)
    except ValueError as err:
        raise ValueError(f"--data cifar10: {err} (delete {cached} to download CIFAR-10 again)") from None


def _make_cache(folder: pathlib.Path, archive: Archive) -> None:
    """Writes ``folder/cifar10.npz`` from ``folder``'s copy of ``archive``, or from a verified download of it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--data cifar10: cannot create the data directory {folder} ({_first_line(err)})") from None
    local = folder / archive.file_name
    if local.is_file():
        _verify(local, archive, f"{local} is not the official {archive.file_name}; delete it")
        _convert(local, folder)
        return
    with _temporary(folder, archive.file_name) as part:
        _download(archive, part, folder)
        _verify(part, archive, f"the download of {archive.url} is damaged or not the official archive; run again")
        _convert(part, folder)
    _say(f"CIFAR-10 is in {folder / CACHE_FILE}; later runs read it from there")


def _download(archive: Archive, part: pathlib.Path, folder: pathlib.Path) -> None:
    """Downloads ``archive.url`` into ``part``; one line, at once, when its host cannot be reached."""
    url = urllib.parse.urlparse(archive.url)
    offline_fix = f"copy {archive.file_name} (from {archive.url}) into {folder} by hand, or use --data npz:PATH"
    if url.scheme in ("http", "https") and url.hostname:
        port = url.port or {"https": 443, "http": 80}[url.scheme]
        problem = input_pipeline.unreachable(*((url.hostname,) if port == 443 else (url.hostname, port)))
        if problem:
            raise ValueError(
                f"--data cifar10: CIFAR-10 is not in {folder} and its download host {url.hostname} cannot be "
                f"reached ({problem}); {offline_fix}"
            )
    _say(f"CIFAR-10 is not in {folder} yet: downloading {archive.url} ({archive.size / 1e6:.0f} MB) once")
    try:
        with urllib.request.urlopen(archive.url, timeout=DOWNLOAD_TIMEOUT_S) as response, part.open("wb") as out:
            _copy(response, out, archive.size)
    except (OSError, http.client.HTTPException) as err:  # HTTP errors, resets, timeouts, a full disk
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err
        raise ValueError(
            f"--data cifar10: downloading {archive.url} failed ({type(err).__name__}: {_first_line(reason)}); "
            f"run again, or {offline_fix}"
        ) from None


def _copy(source: IO[bytes], out: IO[bytes], size: int) -> None:
    """Copies ``source`` to ``out`` with a progress bar in MB (redrawn on a terminal, every 10% elsewhere)."""
    bar = Progress(max(size // 1_000_000, 1), "download MB")
    done = shown = 0
    while chunk := source.read(DOWNLOAD_CHUNK):
        out.write(chunk)
        done += len(chunk)
        if bar.interactive or done >= shown + size // 10:
            bar.update(min(done // 1_000_000, bar.total))
            shown = done
    bar.close()


def _verify(path: pathlib.Path, archive: Archive, fix: str) -> None:
    """Refuses ``path`` unless its size, MD5 and SHA-256 are ``archive``'s."""
    size = path.stat().st_size
    if size != archive.size:
        raise ValueError(f"--data cifar10: checksum mismatch: {size} bytes instead of {archive.size}; {fix}")
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(DOWNLOAD_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    for name, digest, expected in (("MD5", md5, archive.md5), ("SHA-256", sha256, archive.sha256)):
        if digest.hexdigest() != expected:
            raise ValueError(
                f"--data cifar10: checksum mismatch: {name} {digest.hexdigest()} instead of {expected}; {fix}"
            )


def tfds_order(split: str, n: int) -> np.ndarray:
    """The order in which tensorflow-datasets stores the ``n`` images of a CIFAR-10 split: it keys the images by
    their index in the official files and sorts them by the MD5 of the split name followed by the key."""
    hashes = [hashlib.md5(f"{split}{i}".encode(), usedforsecurity=False).hexdigest() for i in range(n)]
    return np.array(sorted(range(n), key=hashes.__getitem__))


def _convert(path: pathlib.Path, folder: pathlib.Path) -> None:
    """``folder/cifar10.npz`` from the verified archive at ``path``, each split in ``tfds_order``: the arrays of
    ``--data tfds``, so runs and figures made with it carry over (the first N images, the held-out split)."""
    try:
        arrays = read_cifar10(path)
    except ValueError as err:
        raise ValueError(f"--data cifar10: {err}") from None
    for split in ("train", "test"):
        order = tfds_order(split, len(arrays[f"y_{split}"]))
        arrays.update({f"x_{split}": arrays[f"x_{split}"][order], f"y_{split}": arrays[f"y_{split}"][order]})
    try:
        save_npz(arrays, folder / CACHE_FILE)
    except OSError as err:
        raise ValueError(f"--data cifar10: cannot write {folder / CACHE_FILE} ({_first_line(err)})") from None


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
