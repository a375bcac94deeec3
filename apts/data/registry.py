"""What the readers know about each dataset: names, file names, mirrors, md5 sums.

The file names, folder names and md5 sums are torchvision's, so a data folder filled
by torchvision (or by hand from the upstream mirrors) is read as is, and one filled
here is read by torchvision.
"""

from __future__ import annotations

DATASETS = ("mnist", "fashion_mnist", "cifar10")  # read from files (synthetic is generated)

# Base URLs tried in order (a file's URL is base + file name). APTS_DATA_MIRROR
# (comma-separated base URLs) and load_dataset(mirrors=...) are tried before these.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}

# md5 of each downloadable file (the sums torchvision checks).
MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
}

# Read-only places a system package may have installed a dataset into. Debian's
# `dataset-fashion-mnist` ships the four upstream *-ubyte.gz files there (recompressed:
# their .gz md5 differs from upstream's, the decompressed IDX content is the same).
SYSTEM_DIRS: dict[str, list[str]] = {
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist"],
}
# The Debian package that fills SYSTEM_DIRS, for the hint when it is not installed.
SYSTEM_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DIR = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
PRETTY = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TAR = "cifar-10-python.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


def canonical_name(name: str) -> str:
    """``name`` as one of :data:`DATASETS` (``Fashion-MNIST`` → ``fashion_mnist``)."""
    key = str(name).strip().lower().replace("-", "_")
    key = {"fashionmnist": "fashion_mnist", "cifar_10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key
