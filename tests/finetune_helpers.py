"""Tiny datasets written by the fine-tuning tests: idx files, CIFAR pickles and image folders."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

TINY_ARCH = "timm:test_resnet"
TINY_SIZE = 16  # with --no-small-input: a few milliseconds per image on a CPU


def class_images(labels: np.ndarray, *, size: int, channels: int, seed: int) -> np.ndarray:
    """uint8 images (N, C, size, size) whose brightness pattern depends on the label, plus noise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    base = np.zeros((n, channels, size, size), dtype=np.float64)
    for i, label in enumerate(labels):
        band = slice(int(label) * size // 4, int(label) * size // 4 + size // 4)
        base[i, :, band, :] = 180.0
    noise = rng.integers(0, 60, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def balanced_labels(num_classes: int, per_class: int, *, seed: int) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_fashion_dir(root: Path, *, num_classes: int = 3, train_per_class: int = 12, test_per_class: int = 4,
                     gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, per_class, seed in (("train", train_per_class, 0), ("t10k", test_per_class, 1)):
        labels = balanced_labels(num_classes, per_class, seed=seed)
        images = class_images(labels, size=28, channels=1, seed=seed)[:, 0]
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels)
    return root


def _cifar_batch(path: Path, labels: np.ndarray, label_key: str, seed: int) -> None:
    images = class_images(labels, size=32, channels=3, seed=seed).reshape(len(labels), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": images, label_key.encode(): labels.tolist()}, f, protocol=2)


def make_cifar_dir(root: Path, *, name: str = "cifar10", num_classes: int = 10, per_class: int = 2) -> Path:
    """torchvision's layout with tiny batches (all 5 CIFAR-10 training files, or CIFAR-100's one)."""
    if name == "cifar10":
        folder, train_files, test_file, meta, key, names_key = (
            "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
            "labels", "label_names")
    else:
        folder, train_files, test_file, meta, key, names_key = (
            "cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names")
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    for i, file in enumerate(train_files):
        _cifar_batch(path / file, balanced_labels(num_classes, per_class, seed=i), key, seed=i)
    _cifar_batch(path / test_file, balanced_labels(num_classes, 1, seed=9), key, seed=9)
    with open(path / meta, "wb") as f:
        pickle.dump({names_key.encode(): [f"class{i}".encode() for i in range(num_classes)]}, f, protocol=2)
    return root


def make_image_folder(root: Path, *, classes=("cat", "dog", "emu"), train_per_class: int = 4,
                      test_per_class: int = 2, test_name: str = "val", size: int = 20) -> Path:
    from PIL import Image

    for split, per_class, seed in (("train", train_per_class, 0), (test_name, test_per_class, 1)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = class_images(np.full(per_class, label), size=size, channels=3, seed=seed + label)
            for i, image in enumerate(images):
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i}.png")
    return root
