"""Image classification data for fine-tuning, held in memory as uint8 tensors.

Every dataset is read into one ``uint8`` tensor of shape ``(N, 3, H, W)`` per split plus an
``int64`` label tensor, so that training can keep the whole (few-shot) training set on the
training device and augment whole batches there (see :mod:`ghnorth_cli.finetune.augment`).

Sources (``--data``):

- ``cifar10`` / ``cifar100``: torchvision's layout under ``data_dir`` (``cifar-10-batches-py/``,
  ``cifar-100-python/``). The pickled batches are read with a restricted unpickler that only
  builds plain containers and numpy arrays. Downloaded (through torchvision) only when asked.
- ``fashion-mnist``: the four idx files (gzipped or not), by default from Debian's
  ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``). Grayscale is
  repeated to 3 channels.
- ``imagefolder:PATH``: ``PATH/train`` and ``PATH/val`` (or ``PATH/test``), one folder per class;
  images are converted to RGB and resized to the requested size when read.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ghnorth_cli.errors import GhnorthError

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

# Per-channel mean and std of the training images (0-1 scale) used to normalize inputs.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2860,) * 3, (0.3530,) * 3),
}


class DatasetError(GhnorthError):
    """A dataset is missing, malformed or cannot provide what was asked."""


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 ``(N, 3, H, W)``, ``labels`` int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class ImageDataset:
    """A dataset's training and test splits, class names and normalization statistics."""

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_dataset(
    source: str, *, data_dir: str | Path | None = None, download: bool = False, img_size: int = 32
) -> ImageDataset:
    """Read a dataset named by ``source`` (see the module docstring) into memory."""
    key = source.strip()
    if key.lower() in ("cifar10", "cifar100"):
        return load_cifar(key.lower(), data_dir=Path(data_dir or "data"), download=download)
    if key.lower() in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return load_fashion_mnist(Path(data_dir) if data_dir else FASHION_MNIST_DIR)
    if key.lower().startswith("imagefolder:"):
        root = Path(key.split(":", 1)[1])
        if data_dir and not root.is_absolute():
            root = Path(data_dir) / root
        return load_image_folder(root, img_size=img_size)
    raise DatasetError(
        f"unknown dataset {source!r}: use cifar10, cifar100, fashion-mnist or imagefolder:PATH"
    )


# --- CIFAR (torchvision's python layout) ------------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "batches.meta", "labels", "label_names",
    ),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}

# The only globals a CIFAR batch may reference: numpy arrays and byte strings.
_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR batch file ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a CIFAR batch file (no dictionary inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def _cifar_split(path: Path, label_key: str) -> Split:
    batch = _read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: CIFAR batch without 'data' or '{label_key}'")
    images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()))


def _download_cifar(name: str, root: Path) -> None:
    """torchvision's CIFAR archive, fetched by ghnorth's downloader (its progress style), md5-checked, unpacked."""
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import check_integrity, extract_archive

    from ghnorth_cli.ghn.download import download

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    archive = root / cls.filename
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not check_integrity(str(archive), cls.tgz_md5):
            download(cls.url, archive)
            if not check_integrity(str(archive), cls.tgz_md5):
                archive.unlink()
                raise DatasetError(f"could not download {name} into {root}: the archive's md5 is not {cls.tgz_md5}")
        extract_archive(str(archive), str(root))
    except DatasetError:
        raise
    except Exception as exc:  # network errors come in many types
        raise DatasetError(f"could not download {name} into {root}: {exc}") from None


def load_cifar(name: str, *, data_dir: Path, download: bool = False) -> ImageDataset:
    """CIFAR-10 or CIFAR-100 from torchvision's python layout under ``data_dir``."""
    layout = _CIFAR[name]
    folder = data_dir / layout.folder
    needed = [folder / f for f in (*layout.train_files, layout.test_file)]
    if download and not all(p.is_file() for p in needed):
        _download_cifar(name, data_dir)
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{name} not found: {missing[0]} is missing (pass --download to fetch it into "
            f"{data_dir}, or --data-dir to point at torchvision's layout)"
        )
    parts = [_cifar_split(folder / f, layout.label_key) for f in layout.train_files]
    train = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    test = _cifar_split(folder / layout.test_file, layout.label_key)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    classes = tuple(str(i) for i in range(num_classes))
    meta_path = folder / layout.meta_file
    if meta_path.is_file():
        names = _read_cifar_pickle(meta_path).get(layout.names_key)
        if isinstance(names, list) and len(names) == num_classes:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    mean, std = DATASET_STATS[name]
    return ImageDataset(name, train, test, classes, mean, std)


# --- Fashion-MNIST (idx files) -----------------------------------------------------------------

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"fashion-mnist not found: no {stem}[.gz] in {folder} ({FASHION_MNIST_HINT})")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (gzipped when its name ends in .gz) of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an idx file")
    if raw[2] != 0x08:
        raise DatasetError(f"{path}: idx element type 0x{raw[2]:02x} is not unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: idx file is truncated ({len(raw) - header} of {expected} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_split(folder: Path, split: str) -> Split:
    image_stem, label_stem = _IDX_FILES[split]
    images = read_idx(_find_idx(folder, image_stem))
    labels = read_idx(_find_idx(folder, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.copy()).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def load_fashion_mnist(folder: Path = FASHION_MNIST_DIR) -> ImageDataset:
    """Fashion-MNIST from its idx files; grayscale repeated to 3 channels (28 x 28 pixels)."""
    if not folder.is_dir():
        raise DatasetError(f"fashion-mnist not found: {folder} does not exist ({FASHION_MNIST_HINT})")
    mean, std = DATASET_STATS["fashion-mnist"]
    train, test = _idx_split(folder, "train"), _idx_split(folder, "test")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    classes = FASHION_MNIST_CLASSES if num_classes == 10 else tuple(str(i) for i in range(num_classes))
    return ImageDataset("fashion-mnist", train, test, classes, mean, std)


# --- ImageFolder -------------------------------------------------------------------------------


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image(path: Path, img_size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((img_size, img_size), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _folder_split(split_dir: Path, classes: list[str], img_size: int) -> Split:
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(path, img_size))
                labels.append(label)
    if not images:
        raise DatasetError(f"{split_dir}: no images found (one folder per class expected)")
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))


def load_image_folder(root: Path, *, img_size: int = 32) -> ImageDataset:
    """``root/train`` and ``root/val`` (or ``root/test``), one folder per class, resized to ``img_size``."""
    train_dir = root / "train"
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DatasetError(f"image folder {root} needs train/ and val/ (or test/) subfolders, one folder per class")
    classes = [p.name for p in _class_folders(train_dir)]
    if not classes:
        raise DatasetError(f"{train_dir}: no class folders")
    unknown = sorted({p.name for p in _class_folders(test_dir)} - set(classes))
    if unknown:
        raise DatasetError(f"{test_dir}: class folder {unknown[0]!r} is not in {train_dir}")
    train = _folder_split(train_dir, classes, img_size)
    test = _folder_split(test_dir, classes, img_size)
    mean, std = IMAGENET_STATS
    return ImageDataset(f"imagefolder:{root}", train, test, tuple(classes), mean, std)
