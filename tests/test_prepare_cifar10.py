"""experiments/prepare_cifar10.py: official archives (python, binary), their folders, image folders, bad input,
pickles that name anything but arrays, damaged archives."""

import functools
import os
import pathlib
import pickle
import struct
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from asose_jax.runtime.input_pipeline import load_npz

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "experiments"))

import prepare_cifar10  # noqa: E402

RNG = np.random.default_rng(0)
IMAGES = {split: RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for split, n in (("train", 6), ("test", 3))}
LABELS = {"train": np.array([0, 1, 2, 3, 4, 9]), "test": np.array([5, 6, 7])}
PLANAR = {s: IMAGES[s].transpose(0, 3, 1, 2).reshape(len(IMAGES[s]), -1) for s in IMAGES}  # the archives' layout


def python2_pickle(batch: dict) -> bytes:
    """``batch`` as Python 2's cPickle wrote the official batches: protocol 2, ``numpy.core`` names, str fields."""

    def string(blob: bytes) -> bytes:  # a Python 2 str (BINSTRING), bytes under encoding="bytes"
        return b"T" + struct.pack("<i", len(blob)) + blob

    data, width = batch[b"data"], 32 * 32 * 3
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xff"
    dtype += b"J\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R(K\x01M"
    array += struct.pack("<H", len(data)) + b"M" + struct.pack("<H", width) + b"\x86" + dtype
    array += b"\x89" + string(data.tobytes()) + b"tb"
    labels = b"](" + b"".join(b"K" + bytes([y]) for y in batch[b"labels"]) + b"e"
    fields = string(b"batch_label") + string(b"training batch") + string(b"data") + array + string(b"labels") + labels
    return b"\x80\x02}(" + fields + b"u."


def write_python_version(folder: pathlib.Path, dumps=pickle.dumps, train=None) -> pathlib.Path:
    """The python version's batches in ``folder``; ``train`` replaces the training batches' contents."""
    folder.mkdir()
    for name, split, rows in (("data_batch_1", "train", slice(0, 4)), ("data_batch_2", "train", slice(4, 6)),
                              ("test_batch", "test", slice(None))):  # fmt: skip
        batch = {b"data": PLANAR[split][rows], b"labels": LABELS[split][rows].tolist()}
        if split == "train" and train is not None:
            batch = train(batch)
        (folder / name).write_bytes(dumps(batch))
    return folder


def write_binary_version(folder: pathlib.Path, train_labels=LABELS["train"]) -> pathlib.Path:
    folder.mkdir()
    for name, split in (("data_batch_1.bin", "train"), ("test_batch.bin", "test")):
        labels = train_labels if split == "train" else LABELS[split]
        records = np.concatenate([labels[:, None].astype(np.uint8), PLANAR[split]], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return folder


def archived(folder: pathlib.Path) -> pathlib.Path:
    path = folder.with_suffix(".tar.gz")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return path


def check_written(tmp_path, source, *flags) -> dict:
    out = tmp_path / "out" / "cifar10.npz"
    assert prepare_cifar10.main([str(source), str(out), *flags]) == 0
    data = load_npz(out)  # the layout --data npz:PATH reads, validated
    return {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}


def check_refused(tmp_path, capsys, source, message, *flags) -> str:
    """``source`` ends in one ``error:`` line naming ``message``, exit status 2 and no output file."""
    out = tmp_path / "out.npz"
    assert prepare_cifar10.main([str(source), str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()
    return err


VERSIONS = {
    "python": write_python_version,  # the default protocol
    "python-protocol-2": functools.partial(write_python_version, dumps=functools.partial(pickle.dumps, protocol=2)),
    "python-protocol-5": functools.partial(write_python_version, dumps=functools.partial(pickle.dumps, protocol=5)),
    "python-2-cpickle": functools.partial(write_python_version, dumps=python2_pickle),
    "binary": write_binary_version,
}


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS.keys())
@pytest.mark.parametrize("packed", [False, True])
def test_official_versions_give_the_images_and_labels(tmp_path, version, packed):
    source = version(tmp_path / "cifar-10-batches")
    data = check_written(tmp_path, archived(source) if packed else source)
    for split in ("train", "test"):
        np.testing.assert_array_equal(data[f"x_{split}"], IMAGES[split])
        np.testing.assert_array_equal(data[f"y_{split}"], LABELS[split])


def test_an_image_folder_numbers_classes_in_name_order_and_the_limit_keeps_the_first(tmp_path):
    for split in ("train", "test"):
        for i, (image, label) in enumerate(zip(IMAGES[split], LABELS[split], strict=True)):
            folder = tmp_path / "images" / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    data = check_written(tmp_path, tmp_path / "images", "--train-limit", "4")
    order = np.argsort(LABELS["train"], kind="stable")  # classes are read folder by folder
    np.testing.assert_array_equal(data["x_train"], IMAGES["train"][order][:4])
    np.testing.assert_array_equal(data["y_train"], [0, 1, 2, 3])  # class_9 is the 9th folder name: label 8
    np.testing.assert_array_equal(data["x_test"], IMAGES["test"])
    np.testing.assert_array_equal(data["y_test"], [5, 6, 7])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.tar.gz", "does not exist"),
        (lambda p: (p / "junk.tar.gz").write_bytes(b"not a tar") and p / "junk.tar.gz", "cannot read"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no train batches"),
    ],
)
def test_bad_sources_are_one_line(tmp_path, capsys, make, message):
    check_refused(tmp_path, capsys, make(tmp_path), message)


class Payload:
    """Pickles as a call of ``function(*args)``."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("function", [open, os.system])
def test_a_pickle_that_calls_anything_is_refused_and_nothing_runs(tmp_path, capsys, function):
    marker = tmp_path / "created"
    payload = Payload(open, str(marker), "w") if function is open else Payload(os.system, f"touch '{marker}'")
    folder = write_python_version(tmp_path / "cifar-10-batches-py", train=lambda batch: {b"data": payload})
    err = check_refused(tmp_path, capsys, archived(folder), f"refuses to unpickle {function.__module__}.")
    assert "data_batch_1" in err and not marker.exists()


@pytest.mark.parametrize(
    "train, message",
    [
        (lambda batch: {**batch, b"data": np.array([None] * 4 * 3072, object).reshape(4, -1)}, "dtype object"),
        (lambda batch: {**batch, b"data": np.ma.masked_array(batch[b"data"])}, "refuses to unpickle numpy.ma"),
        (lambda batch: {**batch, b"data": Payload(np.dtype, ">u2", False, True)}, "dtype >u2"),  # pickled state applies
        (lambda batch: {**batch, b"data": batch[b"data"].astype(np.float32)}, "x_train must be uint8 images"),
        (lambda batch: {**batch, b"labels": [10] * len(batch[b"labels"])}, r"labels must lie in [0, 10)"),
        (lambda batch: {**batch, b"labels": batch[b"labels"][:-1]}, "4 images need as many labels"),
        (lambda batch: {**batch, b"data": batch[b"data"].reshape(-1)}, "must be [N, 3072] channel-planar rows"),
        (lambda batch: [batch], "is not a CIFAR-10 python batch (TypeError"),
    ],
)
def test_batches_with_other_contents_are_refused(tmp_path, capsys, train, message):
    check_refused(tmp_path, capsys, write_python_version(tmp_path / "batches", train=train), message)


def test_binary_labels_out_of_range_are_refused(tmp_path, capsys):
    folder = write_binary_version(tmp_path / "batches", train_labels=np.array([0, 1, 2, 3, 4, 200]))
    check_refused(tmp_path, capsys, folder, "labels must lie in [0, 10), found 0..200")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda blob: blob[: len(blob) // 2], "Compressed file ended"),
        (lambda blob: blob[:-20] + bytes([blob[-20] ^ 1]) + blob[-19:], "CRC check failed"),
        (lambda blob: np.random.default_rng(1).bytes(len(blob)), "could not be opened"),
    ],
    ids=["cut-in-half", "flipped-bit", "random-bytes"],
)
def test_damaged_archives_are_one_line(tmp_path, capsys, damage, message):
    path = archived(write_python_version(tmp_path / "cifar-10-batches-py"))
    path.write_bytes(damage(path.read_bytes()))
    check_refused(tmp_path, capsys, path, message)


def test_archive_members_are_read_one_by_one_and_only_batches_extracted(tmp_path, monkeypatch):
    folder = write_python_version(tmp_path / "cifar-10-batches-py")
    (folder / "readme.html").write_bytes(b"<html>" * 1000)
    extracted = []
    extractfile = tarfile.TarFile.extractfile
    monkeypatch.setattr(
        tarfile.TarFile, "extractfile", lambda self, m: extracted.append(m.name) or extractfile(self, m)
    )
    check_written(tmp_path, archived(folder))
    assert sorted(pathlib.PurePosixPath(name).name for name in extracted) == [
        "data_batch_1",
        "data_batch_2",
        "test_batch",
    ]


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_the_train_limit_must_be_positive(tmp_path, capsys, limit):
    source = write_binary_version(tmp_path / "batches")
    check_refused(
        tmp_path, capsys, source, f"--train-limit must be a positive integer, got {limit}", "--train-limit", limit
    )
