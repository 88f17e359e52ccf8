import collections
import io
import sys
import time
import types
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asose_jax.runtime import input_pipeline
from asose_jax.runtime.input_pipeline import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    augment,
    epoch_batches,
    eval_batches,
    load_data,
    load_npz,
    load_tfds,
    normalize,
    split_for_architecture,
    with_test_limit,
)


def _arrays(n_train=20, n_test=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train),
        "x_test": rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test),
    }


def test_load_npz_train_limit_and_test_limit(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    data = load_npz(tmp_path / "d.npz", train_limit=12)
    assert data.x_train.shape == (12, 8, 8, 3) and data.y_train.dtype == np.int32
    np.testing.assert_array_equal(data.x_train, arrays["x_train"][:12])
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    capped = with_test_limit(data, 5)
    assert len(capped.x_test) == len(capped.y_test) == 5 and capped.x_train is data.x_train
    np.testing.assert_array_equal(capped.x_test, arrays["x_test"][:5])
    assert with_test_limit(data, None) is data and len(with_test_limit(data, 10**6).x_test) == len(data.x_test)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"x_train": np.zeros((4, 8, 8, 3), np.float32)}, "x_train must be uint8"),
        ({"x_train": np.zeros((4, 3, 8, 8), np.uint8)}, r"shape \[N, H, W, 3\]"),
        ({"y_train": np.full(20, 10)}, r"labels must lie in \[0, 10\)"),
        ({"y_train": np.zeros(19, np.int64)}, "has 20 images but y_train has 19"),
        ({"x_test": np.zeros((0, 8, 8, 3), np.uint8), "y_test": np.zeros(0, np.int64)}, "test split is empty"),
        ({"x_test": np.zeros((6, 4, 4, 3), np.uint8)}, "differ in shape"),
    ],
)
def test_bad_arrays_are_named(tmp_path, change, message):
    np.savez(tmp_path / "d.npz", **{**_arrays(), **change})
    with pytest.raises(ValueError, match=message):
        load_npz(tmp_path / "d.npz")


def test_missing_truncated_and_incomplete_files(tmp_path):
    with pytest.raises(ValueError, match="no data file at .*experiments/prepare_cifar10.py"):
        load_npz(tmp_path / "absent.npz")
    np.savez(tmp_path / "d.npz", **_arrays())
    blob = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(tmp_path / "cut.npz")
    partial = _arrays()
    del partial["y_test"]
    np.savez(tmp_path / "partial.npz", **partial)
    with pytest.raises(ValueError, match=r"lacks the arrays \['y_test'\]"):
        load_npz(tmp_path / "partial.npz")


def _npz_with_header(path, header: dict, data: bytes, arrays: dict) -> None:
    """An .npz of ``arrays`` whose ``x_train`` member is an .npy header ``header`` followed by ``data``."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", member.getvalue() + data)
        for key in ("y_train", "x_test", "y_test"):
            with archive.open(f"{key}.npy", "w") as out:
                np.lib.format.write_array(out, arrays[key])


@pytest.mark.parametrize(
    "header, message",
    [
        (
            {"descr": "|u1", "fortran_order": False, "shape": (20, 3, 8, 8)},
            r"shape \[N, H, W, 3\] \(NHWC RGB\), got \(20, 3, 8, 8\)",
        ),
        ({"descr": "<f4", "fortran_order": False, "shape": (20, 8, 8, 3)}, "x_train must be uint8 images"),
        ({"descr": "|u1", "fortran_order": False, "shape": (19, 8, 8, 3)}, "has 19 images but y_train has 20"),
        (
            {"descr": "|u1", "fortran_order": False, "shape": (10**9, 8, 8, 3)},
            r"declares shape \(1000000000, 8, 8, 3\) of uint8 .* but holds 15360 bytes",
        ),
        ({"descr": "|O", "fortran_order": False, "shape": (20, 8, 8, 3)}, "dtype object, which is never loaded"),
    ],
)
def test_what_the_headers_declare_is_refused_before_any_array_is_read(tmp_path, monkeypatch, header, message):
    arrays = _arrays()
    _npz_with_header(tmp_path / "d.npz", header, bytes(4 * arrays["x_train"].nbytes), arrays)  # room for float32

    def must_not_read(*args):
        raise AssertionError("an array was read although its header is refused")

    monkeypatch.setattr(input_pipeline, "_npy_rows", must_not_read)
    with pytest.raises(ValueError, match=message) as err:
        load_npz(tmp_path / "d.npz")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
def test_the_train_limit_reads_only_the_rows_it_keeps(tmp_path, monkeypatch, save):
    arrays = _arrays(n_train=2000)
    save(tmp_path / "d.npz", **arrays)
    full = load_npz(tmp_path / "d.npz")
    read = collections.Counter()  # decompressed bytes read from each member
    zip_read = zipfile.ZipExtFile.read

    def counted(self, n=-1):
        data = zip_read(self, n)
        read[self.name] += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counted)
    limited = load_npz(tmp_path / "d.npz", train_limit=12)
    row = arrays["x_train"][0].nbytes
    assert 12 * row <= read["x_train.npy"] <= 12 * row + 2 * 128  # the rows kept, and the header read twice
    assert read["x_test.npy"] >= arrays["x_test"].nbytes  # the test split is read whole
    for key in ("x_train", "y_train"):
        np.testing.assert_array_equal(getattr(limited, key), getattr(full, key)[:12])
    for key in ("x_test", "y_test"):
        np.testing.assert_array_equal(getattr(limited, key), getattr(full, key))


def test_fortran_ordered_and_big_endian_members_load_as_written(tmp_path):
    arrays = _arrays()
    np.savez(tmp_path / "d.npz", **{**arrays, "x_train": np.asfortranarray(arrays["x_train"]),
                                    "y_train": arrays["y_train"].astype(">i8")})  # fmt: skip
    data = load_npz(tmp_path / "d.npz", train_limit=7)
    np.testing.assert_array_equal(data.x_train, arrays["x_train"][:7])
    np.testing.assert_array_equal(data.y_train, arrays["y_train"][:7])


def test_a_train_limit_below_one_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", **_arrays())
    for limit in (0, -1):
        with pytest.raises(ValueError, match=f"train_limit must be a positive integer, got {limit}"):
            load_npz(tmp_path / "d.npz", train_limit=limit)


def test_architecture_split_is_disjoint_and_covers_the_training_set():
    weights, arch = split_for_architecture(101, 0.5, seed=3)
    assert len(arch) == 50 and len(weights) == 51
    assert not set(weights) & set(arch)
    assert set(weights) | set(arch) == set(range(101))
    again = split_for_architecture(101, 0.5, seed=3)
    np.testing.assert_array_equal(again[1], arch)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
            split_for_architecture(10, bad, seed=0)


def test_normalize_uses_cifar_statistics():
    pixel = jnp.array([[[[125, 123, 114]]]], jnp.uint8)
    expected = (np.array([125, 123, 114]) / 255 - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    chex.assert_trees_all_close(normalize(pixel)[0, 0, 0], expected.astype(np.float32), atol=1e-5)


def test_augment_crops_flips_and_cuts_out():
    images = jnp.asarray(_arrays(n_train=16)["x_train"])
    out = jax.jit(augment, static_argnames=("pad", "cutout"))(jax.random.key(0), images, pad=0)
    # pad=0: no translation, so every image is itself or its mirror.
    base = normalize(images)
    same = jnp.all(out == base, axis=(1, 2, 3)) | jnp.all(out == base[:, :, ::-1], axis=(1, 2, 3))
    assert bool(jnp.all(same)) and not bool(jnp.all(out == base))
    shifted = augment(jax.random.key(1), images, pad=4)
    chex.assert_shape(shifted, images.shape)
    moved = ~(jnp.all(shifted == base, axis=(1, 2, 3)) | jnp.all(shifted == base[:, :, ::-1], axis=(1, 2, 3)))
    assert bool(jnp.any(moved))  # some crops are translated
    zeros = augment(jax.random.key(2), jnp.full((4, 8, 8, 3), 255, jnp.uint8), pad=0, cutout=4)
    assert bool(jnp.all(jnp.any(zeros == 0.0, axis=(1, 2, 3))))  # a zeroed square in every image


def test_epoch_batches_draw_from_their_split_in_a_seeded_order():
    split = np.array([3, 5, 7, 11, 13, 17, 19, 23, 29, 31])
    batches = epoch_batches((0, 1), split, 4)
    assert batches.shape == (2, 4) and len(set(batches.ravel().tolist())) == 8  # remainder dropped
    assert set(batches.ravel().tolist()) <= set(split.tolist())
    np.testing.assert_array_equal(batches, epoch_batches((0, 1), split, 4))  # a pure function of the seed
    assert not np.array_equal(batches, epoch_batches((0, 2), split, 4))
    longer = epoch_batches((0, 1), split, 4, steps=5)  # more steps chain further permutations
    assert longer.shape == (5, 4) and sorted(longer.ravel()[:8].tolist()) == sorted(batches.ravel().tolist())
    with pytest.raises(ValueError, match="larger than the 3 examples"):
        epoch_batches((0,), split[:3], 4)


def test_eval_batches_cover_every_example_once_with_a_mask():
    seen = [idx[mask] for idx, mask in eval_batches(10, 4)]
    assert [len(s) for s in seen] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(10))
    assert all(idx.shape == (4,) for idx, _ in eval_batches(10, 4))  # one shape: one trace


def fake_tfds(monkeypatch, load=None, prepared=False) -> types.ModuleType:
    """Installs stand-ins for tensorflow and tensorflow-datasets (neither is in requirements.txt): ``load``
    replaces ``tfds.load``, by default 12 random CIFAR-sized images per split in batches of 5."""

    def batches(name, split, data_dir, as_supervised, batch_size, download):
        rng = np.random.default_rng(len(split))
        images, labels = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 12)
        return [(images[i : i + 5], labels[i : i + 5]) for i in range(0, 12, 5)]

    tfds = types.ModuleType("tensorflow_datasets")
    tfds.builder = lambda name, data_dir: types.SimpleNamespace(is_prepared=lambda: prepared)
    tfds.load = load or batches
    tfds.as_numpy = lambda ds: ds
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", tfds)
    return tfds


def test_tfds_source_reads_both_splits(monkeypatch):
    fake_tfds(monkeypatch, prepared=True)
    monkeypatch.setattr(input_pipeline, "unreachable", lambda host: pytest.fail("probed although prepared"))
    arrays = load_tfds(train_limit=10)
    assert arrays.x_train.shape == (10, 32, 32, 3) and arrays.x_train.dtype == np.uint8
    assert arrays.x_test.shape == (12, 32, 32, 3) and arrays.y_train.dtype == np.int32
    assert arrays.y_train.max() < 10


@pytest.mark.parametrize("missing", ["tensorflow_datasets", "tensorflow"])
def test_tfds_without_its_packages_is_one_line_naming_the_install(monkeypatch, missing):
    fake_tfds(monkeypatch)
    monkeypatch.setitem(sys.modules, missing, None)  # an import of it raises ImportError
    with pytest.raises(ValueError, match=rf"--data tfds needs tensorflow-datasets and TensorFlow \(.*{missing}") as err:
        load_data("tfds")
    assert input_pipeline.TFDS_INSTALL in str(err.value) and "--data cifar10" in str(err.value)
    assert "\n" not in str(err.value)


def test_tfds_without_data_fails_in_one_line_naming_the_fixes(tmp_path, monkeypatch):
    def not_prepared(name, split, data_dir, as_supervised, batch_size, download):
        assert not download
        raise AssertionError(f"Dataset {name}: could not find data in {data_dir}.\nPlease make sure to call ...")

    fake_tfds(monkeypatch, load=not_prepared)
    with pytest.raises(ValueError, match="--data-dir") as missing:  # the offline path without a download
        load_tfds(data_dir=str(tmp_path), download=False)
    assert "npz:PATH" in str(missing.value) and "\n" not in str(missing.value)

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'\nretrying...")

    fake_tfds(monkeypatch, load=offline)
    monkeypatch.setattr(input_pipeline, "unreachable", lambda host: None)  # the host answers, the download fails
    with pytest.raises(ValueError, match=r"ConnectionError: Failed to resolve .*--data-dir.*npz:PATH") as err:
        load_data("tfds", data_dir=str(tmp_path))
    assert "\n" not in str(err.value)


def test_tfds_fails_at_once_when_the_download_host_cannot_be_reached(tmp_path, monkeypatch):
    """tensorflow-datasets would retry for minutes; an unreachable host is one line before any download."""

    def must_not_download(*args, **kwargs):
        raise AssertionError("tfds.load called although the host is unreachable")

    fake_tfds(monkeypatch, load=must_not_download)
    monkeypatch.setattr(input_pipeline, "unreachable", lambda host: "gaierror: Name or service not known")
    with pytest.raises(ValueError, match=r"cannot be reached \(gaierror.*--data cifar10.*npz:PATH") as err:
        load_data("tfds", data_dir=str(tmp_path))
    assert "www.cs.toronto.edu" in str(err.value) and "\n" not in str(err.value)


def test_the_reachability_probe_is_bounded(monkeypatch):
    start = time.perf_counter()
    assert input_pipeline.unreachable("host.invalid", timeout_s=5.0)  # the .invalid domain never resolves

    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("timed out")

    monkeypatch.setattr(input_pipeline.socket, "create_connection", hang)
    assert input_pipeline.unreachable("example.org", timeout_s=0.5) == "no answer within 0.5 s"
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("source", ["csv:x", "npz:", "CIFAR10", ""])
def test_unknown_data_source(source):
    with pytest.raises(ValueError, match=f"unknown --data '{source}'; use cifar10, npz:PATH or tfds"):
        load_data(source)
