"""experiments/prepare_cifar10.py: official archives (python, binary), their folders, image folders, bad input."""

import pathlib
import pickle
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


def write_python_version(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    for name, split, rows in (("data_batch_1", "train", slice(0, 4)), ("data_batch_2", "train", slice(4, 6)),
                              ("test_batch", "test", slice(None))):  # fmt: skip
        batch = {b"data": PLANAR[split][rows], b"labels": LABELS[split][rows].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def write_binary_version(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    for name, split in (("data_batch_1.bin", "train"), ("test_batch.bin", "test")):
        records = np.concatenate([LABELS[split][:, None].astype(np.uint8), PLANAR[split]], axis=1)
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


@pytest.mark.parametrize("version", [write_python_version, write_binary_version])
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
    assert prepare_cifar10.main([str(make(tmp_path)), str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.npz").exists()
