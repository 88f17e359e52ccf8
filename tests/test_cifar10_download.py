"""``--data cifar10``: the official python archive downloaded once (here a tiny fake of it, served from a
``file://`` URL), verified by size, MD5 and SHA-256, converted and kept as ``cifar10.npz`` in the data directory;
a mismatch, a failed download and an offline machine are one line each."""

import functools
import hashlib
import http.server
import pathlib
import pickle
import tarfile
import threading
import time
import urllib.request

import numpy as np
import pytest

from asose_jax.runtime import cifar10_download, input_pipeline
from asose_jax.runtime.cifar10_download import CACHE_FILE, CIFAR10_PYTHON, Archive, load_cifar10, tfds_order
from asose_jax.runtime.input_pipeline import load_data

RNG = np.random.default_rng(0)
IMAGES = {split: RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for split, n in (("train", 6), ("test", 3))}
LABELS = {"train": np.array([0, 1, 2, 3, 4, 9]), "test": np.array([5, 6, 7])}


def fake_archive(tmp_path: pathlib.Path) -> pathlib.Path:
    """A ``cifar-10-python.tar.gz`` in the official layout (``cifar-10-batches-py/data_batch_N``, ``test_batch``,
    ``batches.meta``) holding 6 training and 3 test images."""
    folder = tmp_path / "build" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    planar = {s: IMAGES[s].transpose(0, 3, 1, 2).reshape(len(IMAGES[s]), -1) for s in IMAGES}
    for name, split, rows in (("data_batch_1", "train", slice(0, 4)), ("data_batch_2", "train", slice(4, 6)),
                              ("test_batch", "test", slice(None))):  # fmt: skip
        batch = {b"batch_label": b"batch", b"data": planar[split][rows], b"labels": LABELS[split][rows].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
    path = tmp_path / "served" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return path


def described(path: pathlib.Path, **changes) -> Archive:
    """``path`` served at a ``file://`` URL, with its true size and digests unless ``changes`` say otherwise."""
    blob = path.read_bytes()
    true = {"url": path.as_uri(), "size": len(blob), "md5": hashlib.md5(blob).hexdigest()}
    return Archive(**{**true, "sha256": hashlib.sha256(blob).hexdigest(), **changes})


def no_network(monkeypatch):
    """Fails the test if anything is downloaded."""

    def urlopen(*args, **kwargs):
        raise AssertionError("urlopen called")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_the_archive_is_downloaded_verified_converted_and_kept_as_an_npz(tmp_path, monkeypatch, capsys):
    archive = described(fake_archive(tmp_path))
    data_dir = tmp_path / "cache"
    data = load_cifar10(data_dir, train_limit=5, archive=archive)
    for split, limit in (("train", 5), ("test", None)):
        order = tfds_order(split, len(LABELS[split]))[:limit]
        np.testing.assert_array_equal(getattr(data, f"x_{split}"), IMAGES[split][order])
        np.testing.assert_array_equal(getattr(data, f"y_{split}"), LABELS[split][order])
    assert data.y_train.dtype == np.int32
    assert sorted(p.name for p in data_dir.iterdir()) == [CACHE_FILE]  # the downloaded archive is not kept
    assert "downloading" in capsys.readouterr().err
    no_network(monkeypatch)  # later runs read the npz
    again = load_data("cifar10", str(data_dir))
    np.testing.assert_array_equal(again.x_train, IMAGES["train"][tfds_order("train", 6)])


def test_an_archive_put_into_the_data_directory_is_used_without_a_download(tmp_path, monkeypatch):
    source = fake_archive(tmp_path)
    archive = described(source, url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    data_dir = tmp_path / "cache"
    data_dir.mkdir()
    (data_dir / source.name).write_bytes(source.read_bytes())
    no_network(monkeypatch)
    monkeypatch.setattr(input_pipeline, "unreachable", lambda host: pytest.fail("probed the host"))
    data = load_cifar10(data_dir, archive=archive)
    np.testing.assert_array_equal(data.x_test, IMAGES["test"][tfds_order("test", 3)])
    assert (data_dir / source.name).is_file() and (data_dir / CACHE_FILE).is_file()  # the user's archive is kept


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sha256": "0" * 64}, "checksum mismatch: SHA-256 "),
        ({"md5": "0" * 32}, "checksum mismatch: MD5 "),
        ({"size": 170_498_071}, "checksum mismatch: "),
    ],
    ids=["sha256", "md5", "size"],
)
def test_a_checksum_mismatch_is_refused_in_one_line(tmp_path, changes, message):
    archive = described(fake_archive(tmp_path), **changes)
    data_dir = tmp_path / "cache"
    with pytest.raises(ValueError) as err:
        load_cifar10(data_dir, archive=archive)
    assert message in str(err.value) and "damaged or not the official archive" in str(err.value)
    assert "\n" not in str(err.value)
    assert list(data_dir.iterdir()) == []  # neither the download nor an npz stays


def test_a_wrong_archive_in_the_data_directory_is_refused_naming_it(tmp_path):
    data_dir = tmp_path / "cache"
    data_dir.mkdir()
    (data_dir / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(ValueError, match=r"checksum mismatch: 15 bytes instead of 170498071; .* delete it$"):
        load_cifar10(data_dir, archive=CIFAR10_PYTHON)
    assert not (data_dir / CACHE_FILE).exists()


def test_offline_is_one_line_within_seconds_and_downloads_nothing(tmp_path, monkeypatch, capsys):
    no_network(monkeypatch)
    monkeypatch.setattr(input_pipeline, "unreachable", lambda host: "gaierror: Name or service not known")
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        load_data("cifar10", str(tmp_path / "cache"))
    message = str(err.value)
    assert "www.cs.toronto.edu cannot be reached (gaierror" in message and "\n" not in message
    assert "copy cifar-10-python.tar.gz" in message and "npz:PATH" in message
    assert time.perf_counter() - start < 5 and leftovers(tmp_path / "cache") == []
    assert capsys.readouterr().err == ""  # the error is the only line


@pytest.fixture
def http_folder(tmp_path):
    """``(folder, base URL)``: ``folder`` served over HTTP on localhost, as the download host serves the archive."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_download_over_http_probes_the_host_and_shows_progress(tmp_path, http_folder, monkeypatch, capsys):
    folder, base = http_folder
    source = fake_archive(tmp_path / "made")
    (folder / source.name).write_bytes(source.read_bytes())
    probed = []
    monkeypatch.setattr(input_pipeline, "unreachable", lambda *host_port: probed.append(host_port))
    data = load_cifar10(tmp_path / "cache", archive=described(source, url=f"{base}/{source.name}"))
    np.testing.assert_array_equal(data.x_train, IMAGES["train"][tfds_order("train", 6)])
    assert probed == [("127.0.0.1", int(base.rsplit(":", 1)[1]))]
    assert "[download MB]" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"downloading http://.*/nothing.tar.gz failed \(HTTPError: HTTP Error 404: "):
        load_cifar10(tmp_path / "other", archive=described(source, url=f"{base}/nothing.tar.gz"))


def test_a_failed_download_is_one_line(tmp_path):
    archive = described(fake_archive(tmp_path), url=(tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(ValueError, match=r"^--data cifar10: downloading file://.* failed \(URLError: ") as err:
        load_cifar10(tmp_path / "cache", archive=archive)
    assert "\n" not in str(err.value) and leftovers(tmp_path / "cache") == []


def test_a_damaged_cached_npz_names_the_file_to_delete(tmp_path):
    data_dir = tmp_path / "cache"
    data_dir.mkdir()
    (data_dir / CACHE_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"not a readable \.npz file.*delete .*cifar10\.npz to download") as err:
        load_cifar10(data_dir, archive=CIFAR10_PYTHON)
    assert "\n" not in str(err.value)


def test_the_default_data_directory_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cifar10_download.default_data_dir() == tmp_path / "asose_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cifar10_download.default_data_dir() == pathlib.Path.home() / ".cache" / "asose_jax"


def test_the_official_archive_is_pinned():
    assert CIFAR10_PYTHON.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_PYTHON.md5 == "c58f30108f718f92721af3b95e74349a"  # the CIFAR-10 page's
    assert CIFAR10_PYTHON.file_name == "cifar-10-python.tar.gz"


def test_the_images_are_in_the_order_tensorflow_datasets_stores_them():
    """Checked against tensorflow-datasets 4.9.10 (with TensorFlow) preparing its cifar10 from a fake binary archive
    of 1,500 training and 200 test images: its splits were the official order permuted by ``tfds_order``."""
    assert tfds_order("train", 1500)[:8].tolist() == [1456, 499, 837, 546, 386, 1494, 816, 266]
    assert tfds_order("test", 200)[:8].tolist() == [163, 131, 166, 174, 179, 139, 71, 16]
    assert sorted(tfds_order("train", 50_000)) == list(range(50_000))
