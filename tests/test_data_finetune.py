"""Fine-tuning data: dataset readers, few-shot splits and batch augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune_helpers import make_cifar_dir, make_fashion_dir, make_image_folder, write_idx
from ghnorth_cli.finetune.augment import random_crop_flip, to_model_input
from ghnorth_cli.finetune.data import FASHION_MNIST_DIR, DatasetError, load_dataset, read_idx
from ghnorth_cli.finetune.splits import balanced_subset, make_splits


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_idx_files_read_back_gzipped_or_not(tmp_path: Path, name: str) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, array)), array)


def test_truncated_idx_file_is_an_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.idx", np.zeros((4, 5), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(path)


def test_fashion_mnist_idx_layout_repeats_gray_to_rgb(tmp_path: Path) -> None:
    ds = load_dataset("fashion-mnist", data_dir=make_fashion_dir(tmp_path / "fm", gz=False))
    assert ds.train.images.shape == (36, 3, 28, 28) and ds.train.images.dtype == torch.uint8
    assert torch.equal(ds.train.images[:, 0], ds.train.images[:, 2])
    assert ds.num_classes == 3 and len(ds.test) == 12


def test_missing_fashion_mnist_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("name, classes, train", [("cifar10", 10, 100), ("cifar100", 100, 200)])
def test_cifar_in_torchvision_layout(tmp_path: Path, name: str, classes: int, train: int) -> None:
    ds = load_dataset(name, data_dir=make_cifar_dir(tmp_path, name=name, num_classes=classes))
    assert ds.train.images.shape == (train, 3, 32, 32)
    assert ds.num_classes == classes and ds.classes[1] == "class1"
    assert len(ds.test) == classes


def test_missing_cifar_suggests_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--download"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_failed_download_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    import ghnorth_cli.ghn.download

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(ghnorth_cli.ghn.download, "download", offline)
    with pytest.raises(DatasetError, match="could not download cifar10 .*network is unreachable"):
        load_dataset("cifar10", data_dir=tmp_path, download=True)


def test_cifar_download_goes_through_ghnorths_downloader_and_checks_md5(tmp_path: Path, monkeypatch) -> None:
    import hashlib
    import tarfile

    import torchvision.datasets

    import ghnorth_cli.ghn.download

    source = make_cifar_dir(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    fetched = []

    def serve(url, dest, **kwargs):  # download() (progress, atomic write) is tested in test_registry.py
        fetched.append(url)
        Path(dest).write_bytes(archive.read_bytes())
        return Path(dest)

    monkeypatch.setattr(ghnorth_cli.ghn.download, "download", serve)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    data = load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert fetched == [torchvision.datasets.CIFAR10.url] and len(data.train) == 100
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(DatasetError, match="md5"):
        load_dataset("cifar10", data_dir=tmp_path / "other", download=True)
    assert not (tmp_path / "other" / "cifar-10-python.tar.gz").exists()


def test_cifar_pickle_with_code_is_refused(tmp_path: Path) -> None:
    root = make_cifar_dir(tmp_path)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Path("/etc/passwd")}, f, protocol=2)  # a global that is not a numpy array
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset("cifar10", data_dir=root)


@pytest.mark.parametrize("test_name", ["val", "test"])
def test_image_folder_reads_and_resizes(tmp_path: Path, test_name: str) -> None:
    root = make_image_folder(tmp_path / "imgs", test_name=test_name)
    ds = load_dataset(f"imagefolder:{root}", img_size=24)
    assert ds.classes == ("cat", "dog", "emu")
    assert ds.train.images.shape == (12, 3, 24, 24) and len(ds.test) == 6
    assert ds.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_without_test_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="val/"):
        load_dataset(f"imagefolder:{tmp_path / 'imgs'}")


def test_unknown_dataset_lists_the_choices() -> None:
    with pytest.raises(DatasetError, match="imagefolder:PATH"):
        load_dataset("mnist")


def test_balanced_subset_is_seeded_and_balanced() -> None:
    labels = torch.arange(5).repeat(20)
    draw = lambda seed: balanced_subset(labels, per_class=3, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    first = draw(0)
    assert torch.equal(first, draw(0)) and not torch.equal(first, draw(1))
    assert torch.bincount(labels[first]).tolist() == [3] * 5
    with pytest.raises(DatasetError, match="more than the 20 training images"):
        balanced_subset(labels, per_class=21, generator=torch.Generator())


def test_validation_comes_from_the_rest_of_the_training_split(tmp_path: Path) -> None:
    ds = load_dataset("fashion-mnist", data_dir=make_fashion_dir(tmp_path))
    few = make_splits(ds, labels_per_class=2, val_size=10, seed=3)
    no_val = make_splits(ds, labels_per_class=2, val_size=0, seed=3)
    assert len(few.train) == 6 and len(few.val) == 10 and no_val.val is None
    assert torch.equal(few.train.images, no_val.train.images)  # the subset ignores --val-size
    train_rows = {row.tobytes() for row in few.train.images.numpy()}
    assert not train_rows & {row.tobytes() for row in few.val.images.numpy()}
    full = make_splits(ds, labels_per_class=None, val_size=0.25, seed=3, test_size=5)
    assert (len(full.train), len(full.val), len(full.test)) == (27, 9, 5)
    with pytest.raises(DatasetError, match="--val-size 31"):
        make_splits(ds, labels_per_class=2, val_size=31, seed=3)


def test_crop_and_flip_are_shifts_and_mirrors_of_each_image() -> None:
    images = torch.randint(1, 255, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding shows as 0
    out = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(0))
    again = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and torch.equal(out, again)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        candidates = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert not torch.equal(out, images)
    assert torch.equal(random_crop_flip(images, padding=0, flip=False, generator=torch.Generator()), images)


def test_model_input_is_normalized_and_resized() -> None:
    images = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    x = to_model_input(images, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), img_size=12)
    assert x.shape == (2, 3, 12, 12) and torch.allclose(x, torch.full_like(x, 2.0))


def test_debian_fashion_mnist_files() -> None:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Debian's Fashion-MNIST is not installed at {FASHION_MNIST_DIR} "
                    "(apt-get install dataset-fashion-mnist)")
    ds = load_dataset("fashion-mnist")
    assert ds.train.images.shape == (60000, 3, 28, 28) and ds.test.images.shape == (10000, 3, 28, 28)
    assert torch.bincount(ds.train.labels).tolist() == [6000] * 10
    assert ds.classes[9] == "Ankle boot"
