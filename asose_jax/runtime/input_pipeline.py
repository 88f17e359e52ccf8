"""CIFAR-style image arrays: loading and validation, the held-out architecture split, on-device augmentation.

Arrays stay uint8 NHWC until a jitted step augments and normalises them, so a
whole data set (150 MB for CIFAR-10) can live on the accelerator and the input
pipeline is a gather plus a few elementwise ops inside jit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import socket
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from typing import IO, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Per-channel mean and standard deviation of the CIFAR-10 training pixels. (Many codebases copy the
# std (0.2023, 0.1994, 0.2010), which is not the pixel std; these are the measured values.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPY_READ_CHUNK = 1 << 20  # bytes per read of an .npz member
# Help of the data flags, which both command-line entry points take.
DATA_HELP = (
    "data source: cifar10 (CIFAR-10, downloaded once into --data-dir), npz:PATH, or tfds (CIFAR-10 via "
    "tensorflow-datasets, installed separately)"
)
DATA_DIR_HELP = (
    "where --data cifar10 keeps CIFAR-10 (default: ~/.cache/asose_jax), or the tensorflow-datasets directory "
    "of --data tfds (default: ~/tensorflow_datasets)"
)
DATA_SOURCES = "cifar10, npz:PATH or tfds"  # what --data takes, for error messages
TFDS_INSTALL = "pip install tensorflow-datasets==4.9.10 tensorflow-cpu==2.20.0 importlib_resources==7.1.0"


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    """uint8 images [N, H, W, 3] and int32 labels [N] of the train and test splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10


def validate_arrays(arrays: ImageArrays, source: str) -> ImageArrays:
    """Raises ValueError naming the first problem: shapes, dtypes, label range, emptiness."""
    for split in ("train", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        if x.dtype != np.uint8:
            raise ValueError(f"{source}: x_{split} must be uint8 images, got dtype {x.dtype}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{source}: x_{split} must have shape [N, H, W, 3] (NHWC RGB), got {x.shape}")
        if len(x) == 0:
            raise ValueError(f"{source}: the {split} split is empty")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise ValueError(f"{source}: y_{split} must be a 1-D integer label array, got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise ValueError(f"{source}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if y.min() < 0 or y.max() >= arrays.num_classes:
            raise ValueError(
                f"{source}: y_{split} labels must lie in [0, {arrays.num_classes}), found {y.min()}..{y.max()}"
            )
    if arrays.x_train.shape[1:] != arrays.x_test.shape[1:]:
        raise ValueError(f"{source}: train images {arrays.x_train.shape[1:]} and test images differ in shape")
    return arrays


class _NpyHeader(NamedTuple):
    """What the header of one .npy member of an .npz declares, and how many data bytes the member holds."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    data_bytes: int


def load_npz(path: str | pathlib.Path, train_limit: int | None = None, num_classes: int = 10) -> ImageArrays:
    """Reads ``x_train, y_train, x_test, y_test`` from an .npz; keeps the first ``train_limit`` training images.

    The dtypes and shapes that the members' .npy headers declare are validated before any array is read, and
    of the training arrays only the first ``train_limit`` rows are read (and decompressed).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"no data file at {path}: write one with experiments/prepare_cifar10.py")
    _check_limit(train_limit)
    with _readable(path):
        archive = zipfile.ZipFile(path)
    with archive:
        missing = [k for k in NPZ_KEYS if f"{k}.npy" not in archive.namelist()]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}; it needs {', '.join(NPZ_KEYS)}")
        with _readable(path):
            headers = {k: _npy_header(archive, k) for k in NPZ_KEYS}
        _check_headers(headers, str(path), num_classes)
        with _readable(path):
            arrays = {k: _npy_rows(archive, k, train_limit if k.endswith("_train") else None) for k in NPZ_KEYS}
    return _checked(arrays, str(path), num_classes)


@contextlib.contextmanager
def _readable(path: pathlib.Path) -> Iterator[None]:
    """Turns what a damaged .npz raises (zipfile, zlib, numpy's header parser, a short member) into one line."""
    try:
        yield
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise ValueError(f"{path} is not a readable .npz file ({first_line}); regenerate it") from None


def _read_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of an .npy stream, which is left at the array's data."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    version = np.lib.format.read_magic(member)
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return readers[version](member)


def _npy_header(archive: zipfile.ZipFile, key: str) -> _NpyHeader:
    """The header of the member ``key`` of an .npz, read without its data."""
    with archive.open(f"{key}.npy") as member:
        shape, fortran_order, dtype = _read_header(member)
        return _NpyHeader(dtype, shape, fortran_order, archive.getinfo(f"{key}.npy").file_size - member.tell())


def _check_headers(headers: dict[str, _NpyHeader], source: str, num_classes: int) -> None:
    """Refuses, before any array is read, what the headers declare wrongly: object or sub-array dtypes, more
    data than the member holds, and what ``validate_arrays`` refuses but label values."""
    for key, header in headers.items():
        if header.dtype.hasobject or header.dtype.subdtype is not None:
            raise ValueError(
                f"{source}: {key} has dtype {header.dtype}, which is never loaded; "
                "write the file again with experiments/prepare_cifar10.py"
            )
        size = math.prod(header.shape) * header.dtype.itemsize
        if size > header.data_bytes:
            raise ValueError(
                f"{source}: {key} declares shape {header.shape} of {header.dtype} ({size} bytes) but holds "
                f"{header.data_bytes} bytes; write the file again with experiments/prepare_cifar10.py"
            )
    # Arrays of the declared dtypes and shapes that take no memory (every element is one zero).
    declared = {key: np.broadcast_to(np.zeros((), h.dtype), h.shape) for key, h in headers.items()}
    validate_arrays(ImageArrays(**declared, num_classes=num_classes), source)


def _npy_rows(archive: zipfile.ZipFile, key: str, limit: int | None) -> np.ndarray:
    """The array ``key`` of an .npz, or its first ``limit`` rows; a C-ordered member is read no further."""
    with archive.open(f"{key}.npy") as member:
        shape, fortran_order, dtype = _read_header(member)
        if fortran_order:  # the rows are not contiguous: read it all
            return _filled(member, np.empty(shape[::-1], dtype)).T[:limit]
        rows = shape[0] if limit is None else min(limit, shape[0])
        return _filled(member, np.empty((rows, *shape[1:]), dtype))


def _filled(member: IO[bytes], array: np.ndarray) -> np.ndarray:
    """``array`` (C-contiguous) filled with the next ``array.nbytes`` bytes of ``member``, read in chunks."""
    view = memoryview(array.reshape(-1).view(np.uint8))
    filled = 0
    while filled < len(view):
        count = member.readinto(view[filled : filled + NPY_READ_CHUNK])
        if not count:
            raise EOFError(f"the data end after {filled} of {len(view)} bytes")
        filled += count
    return array


def _check_limit(train_limit: int | None) -> None:
    """Refuses a ``train_limit`` that is not None or a positive integer."""
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"train_limit must be a positive integer, got {train_limit}")


def _limited(arrays: dict, train_limit: int | None) -> dict:
    """At most the first ``train_limit`` training images (see ``check_train_limit`` for an exact count)."""
    _check_limit(train_limit)
    if train_limit is None:
        return arrays
    return {**arrays, "x_train": arrays["x_train"][:train_limit], "y_train": arrays["y_train"][:train_limit]}


def _checked(arrays: dict, source: str, num_classes: int = 10) -> ImageArrays:
    """Validated arrays with int32 labels."""
    checked = validate_arrays(ImageArrays(**arrays, num_classes=num_classes), source)
    return dataclasses.replace(
        checked, y_train=checked.y_train.astype(np.int32), y_test=checked.y_test.astype(np.int32)
    )


def split_for_architecture(n: int, arch_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint index sets (weights, architecture) of a training set of ``n`` examples.

    ``arch_fraction`` of the examples (DARTS: 0.5) are held out for the architecture
    steps; the permutation is a pure function of ``seed``.
    """
    if not 0 < arch_fraction < 1:
        raise ValueError(f"the architecture split must lie in (0, 1), got {arch_fraction}")
    n_arch = int(round(n * arch_fraction))
    if n_arch < 1 or n_arch >= n:
        raise ValueError(f"an architecture split of {arch_fraction} leaves an empty part of {n} training images")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_arch:]), np.sort(order[:n_arch])


def normalize(images: jax.Array) -> jax.Array:
    """uint8 [..., 3] -> float32, per-channel standardised with the CIFAR-10 statistics."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(CIFAR10_MEAN)) / jnp.asarray(CIFAR10_STD)


def augment(key: jax.Array, images: jax.Array, pad: int = 4, cutout: int = 0) -> jax.Array:
    """Normalise, then random crop after padding by ``pad``, horizontal flip, optional ``cutout`` square.

    Padding and cutout write zeros in normalised space (the mean colour).
    images: uint8 [B, H, W, 3] -> float32 [B, H, W, 3]. One draw per image.
    """
    b, h, w, _ = images.shape
    crop_key, flip_key, cut_key = jax.random.split(key, 3)
    x = normalize(images)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)
    x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, 3)))(padded, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (b,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    if cutout:
        centres = jax.random.randint(cut_key, (b, 2), 0, jnp.array([h, w]))
        rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
        inside = (jnp.abs(rows - centres[:, 0, None, None]) * 2 < cutout) & (
            jnp.abs(cols - centres[:, 1, None, None]) * 2 < cutout
        )
        x = jnp.where(inside[..., None], 0.0, x)
    return x


def epoch_batches(seed: Sequence[int], indices: np.ndarray, batch_size: int, steps: int | None = None) -> np.ndarray:
    """Index batches ``[steps, batch_size]`` drawn from ``indices`` in shuffled order.

    ``steps`` defaults to one epoch (``len(indices) // batch_size``, the last partial batch
    dropped); more steps chain further permutations. The order is a pure function of ``seed``
    (e.g. ``(run seed, cycle, phase, epoch)``), so a resumed run sees the same batches.
    """
    n = len(indices)
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} is larger than the {n} examples; use --batch-size <= {n}")
    steps = n // batch_size if steps is None else steps
    rng = np.random.default_rng(list(seed))
    rounds = -(-steps * batch_size // n)
    order = np.concatenate([rng.permutation(n) for _ in range(rounds)])[: steps * batch_size]
    return np.asarray(indices)[order].reshape(steps, batch_size)


def eval_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices [batch_size], mask [batch_size])`` covering ``range(n)`` once, in order; the last
    batch is padded with index 0 and ``mask`` False, so every batch has one shape (one trace)."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        yield np.where(idx < n, idx, 0).astype(np.int32), idx < n


DOWNLOAD_HOSTS = {"cifar10": "www.cs.toronto.edu"}  # where tensorflow-datasets downloads each data set from


def unreachable(host: str, port: int = 443, timeout_s: float = 10.0) -> str | None:
    """Why ``host:port`` cannot be reached within ``timeout_s`` (name lookup included), or None if it can.

    A download retries or hangs for minutes (tensorflow-datasets retries a failed one); this check, made before
    ``--data cifar10`` or ``--data tfds`` downloads, makes an offline machine fail at once.
    """
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def _is_prepared(tfds, name: str, data_dir: str | None) -> bool:
    """Whether ``name`` is prepared in ``data_dir``, without tensorflow-datasets' warnings about empty folders."""
    from absl import logging as absl_logging

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return tfds.builder(name, data_dir=data_dir).is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)


def load_tfds(
    data_dir: str | None = None, train_limit: int | None = None, name: str = "cifar10", download: bool = True
) -> ImageArrays:
    """CIFAR-10 from tensorflow-datasets (downloaded and prepared on first use when ``download``).

    An optional source: tensorflow-datasets needs TensorFlow to prepare and to read CIFAR-10, and neither is in
    requirements.txt (``TFDS_INSTALL`` installs them; use ``tensorflow-cpu``, which never takes an accelerator).
    TensorFlow is imported only here, with its logging silenced. Any failure becomes one ValueError naming the fixes.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow  # noqa: F401  (tensorflow-datasets imports it lazily, at the first read)
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ValueError(
            f"--data tfds needs tensorflow-datasets and TensorFlow ({err}): {TFDS_INSTALL}; "
            "or use --data cifar10, which needs neither"
        ) from None
    where = data_dir or "the default ~/tensorflow_datasets"
    host = DOWNLOAD_HOSTS.get(name)
    needs_download = download and host and not _is_prepared(tfds, name, data_dir)
    if needs_download and (problem := unreachable(host)):
        raise ValueError(
            f"--data tfds: {name} is not prepared in {where} and its download host {host} cannot be reached "
            f"({problem}); offline, download the CIFAR-10 python archive elsewhere and put it into --data-dir "
            "with --data cifar10, or convert it with experiments/prepare_cifar10.py for --data npz:PATH"
        )
    arrays = {}
    for split in ("train", "test"):
        try:
            ds = tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, batch_size=1024, download=download)
            chunks = list(tfds.as_numpy(ds))
        except Exception as err:  # tfds raises many types (network, missing files, assertion)
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(
                f"cannot load tfds {name!r} from {where} ({type(err).__name__}: {first_line}); point "
                "--data-dir at a prepared copy, or use --data cifar10 or --data npz:PATH"
            ) from None
        arrays[f"x_{split}"] = np.concatenate([x for x, _ in chunks])
        arrays[f"y_{split}"] = np.concatenate([y for _, y in chunks])
    return _checked(_limited(arrays, train_limit), f"tfds {name}")


def with_test_limit(data: ImageArrays, test_limit: int | None) -> ImageArrays:
    """``data`` with at most its first ``test_limit`` test images (a cap, as a preset's ``train_limit`` is)."""
    if test_limit is None:
        return data
    return dataclasses.replace(data, x_test=data.x_test[:test_limit], y_test=data.y_test[:test_limit])


def check_train_limit(data: ImageArrays, train_limit: int | None) -> None:
    """Refuses a ``--train-limit`` the user gave that is larger than the training split (loaders treat a limit as
    a cap, which presets rely on to fit any data set)."""
    if train_limit is not None and train_limit > len(data.x_train):
        raise ValueError(
            f"--train-limit {train_limit} is larger than the {len(data.x_train)} training images; lower it "
            "or drop it to use them all"
        )


def check_source(source: str) -> str:
    """``source`` if ``--data`` takes it (``"cifar10"``, ``"npz:PATH"`` or ``"tfds"``), else ValueError."""
    if source in ("cifar10", "tfds") or (source.startswith("npz:") and len(source) > 4):
        return source
    raise ValueError(f"unknown --data {source!r}; use {DATA_SOURCES}")


def load_data(source: str, data_dir: str | None = None, train_limit: int | None = None) -> ImageArrays:
    """``source`` is ``"cifar10"`` (``cifar10_download.load_cifar10``), ``"npz:PATH"`` or ``"tfds"``."""
    if check_source(source) == "cifar10":
        from asose_jax.runtime.cifar10_download import load_cifar10  # it imports this module

        return load_cifar10(data_dir, train_limit)
    if source == "tfds":
        return load_tfds(data_dir, train_limit)
    return load_npz(source[4:], train_limit)
