"""Folders of images and torch Datasets as data sets: read, resized, split, cached, trained on."""

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae.cli import main
from pyro_vae.config import DataConfig
from pyro_vae.config.build import dataset_from_config
from pyro_vae.errors import DataError


class Blobs(torch.utils.data.Dataset):
    """A Dataset class as a user writes one: items (x, label), ``train`` picks the split."""

    def __init__(self, n: int = 30, train: bool = True) -> None:
        g = torch.Generator().manual_seed(0 if train else 1)
        self.x = torch.rand(n, 1, 4, 4, generator=g)
        self.y = (self.x.mean((1, 2, 3)) > 0.5).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / "pics" / label / f"{i}.png")
    return tmp_path / "pics"


def test_an_image_folder_is_read_resized_split_and_cached(tmp_path, image_folder):
    config = DataConfig(name="image_folder", path=str(image_folder), size=[8, 6], channels=1, test_fraction=0.25,
                        root=str(tmp_path / "cache"))
    data = dataset_from_config(config)
    assert data.x_shape == (1, 8, 6) and data.x_train.shape == (9, 48) and data.x_test.shape == (3, 48)
    assert 0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1 and set(data.y_train.tolist()) <= {0, 1}
    assert len(list((tmp_path / "cache" / "image_folder").glob("*.npz"))) == 1
    again = dataset_from_config(config)  # from the cache, the same points
    assert again.info["fingerprint"] == data.info["fingerprint"]
    rgb = dataset_from_config(config.model_copy(update={"channels": 3}))
    assert rgb.x_shape == (3, 8, 6)
    (image_folder / "cats" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read the image .*bad.png"):
        dataset_from_config(config)


def test_a_torch_dataset_class_is_read_by_its_split_argument(tmp_path):
    data = dataset_from_config(DataConfig(name="torch_dataset", target="tests.data.test_external:Blobs", kwargs={"n": 20},
                                          split_argument="train", root=str(tmp_path)))
    assert data.x_shape == (1, 4, 4) and data.x_train.shape == (20, 16) and data.y_test.shape == (20,)
    assert torch.allclose(data.x_train, Blobs(20, train=True).x.reshape(20, -1))
    with pytest.raises(DataError, match="must read module:Class"):
        dataset_from_config(DataConfig(name="torch_dataset", target="Blobs", root=str(tmp_path)))


def test_training_on_an_image_folder_from_the_command_line(tmp_path, image_folder):
    assert main(["train", "tiny", "--run-dir", str(tmp_path / "r"), "--no-progress", "--set", "training.epochs=1",
                 "--set", f"data={{name: image_folder, path: {image_folder}, size: [8, 8], root: {tmp_path / 'cache'}}}",
                 "--set", "model.likelihood.name=continuous_bernoulli", "--set", "training.batch_size=5"]) == 0
