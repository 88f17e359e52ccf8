"""Write CIFAR-10 as the ``.npz`` that ``--data npz:PATH`` reads (``x_train, y_train, x_test, y_test``: uint8
NHWC images, int64 labels), from an archive you have (``--data cifar10`` downloads and converts the python
version by itself), an extracted folder or a folder of images.

    python experiments/prepare_cifar10.py cifar-10-python.tar.gz data/cifar10.npz      # official python version
    python experiments/prepare_cifar10.py cifar-10-binary.tar.gz data/cifar10.npz      # official binary version
    python experiments/prepare_cifar10.py cifar10_images/ data/cifar10.npz             # train/<class>/*.png, test/...

The source is the official archive (as downloaded by hand from the CIFAR-10 page), its extracted folder
(``cifar-10-batches-py`` or ``cifar-10-batches-bin``), or a folder of images with ``train/`` and ``test/``
holding one sub-folder per class (classes numbered in sorted name order over both splits).
``--train-limit N`` keeps the first N training images. The python batches are unpickled by an unpickler that
builds only dicts, lists, bytes, strings, numbers and numeric arrays (nothing in a pickle is imported or called);
the arrays are validated as ``--data npz:PATH`` validates them. Bad input ends with one line on stderr and exit
status 2, and nothing is written. The readers live in ``asose_jax.runtime.cifar10_download``, which
``--data cifar10`` uses too.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.runtime.cifar10_download import read_cifar10, save_npz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=pathlib.Path, help="official archive, its extracted folder, or image folder")
    parser.add_argument("out", type=pathlib.Path, help="the .npz to write")
    parser.add_argument("--train-limit", type=int, help="keep only the first N training images (N >= 1)")
    args = parser.parse_args(argv)
    try:
        arrays = read_cifar10(args.source, args.train_limit)
        save_npz(arrays, args.out)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(arrays['y_train'])} train, {len(arrays['y_test'])} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
