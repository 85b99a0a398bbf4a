import gzip
import hashlib
import pickle
import warnings

import numpy as np
import pytest
import scipy.io
import torch

from pyro_vae.components.likelihoods import Bernoulli, Beta, ContinuousBernoulli
from pyro_vae.config import DataConfig
from pyro_vae.config.build import dataset_from_config
from pyro_vae.data import datasets as D
from pyro_vae.data import external, frey_face, mnist
from pyro_vae.data.safe_pickle import load_arrays
from pyro_vae.errors import ConfigError, DataError


def _mnist_like_pickle(path, n=(5, 3, 4), protocol=2):
    rng = np.random.default_rng(0)
    parts = tuple((rng.random((k, 784), dtype=np.float32), rng.integers(0, 10, k).astype(np.int64)) for k in n)
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=protocol)
    return parts


@pytest.mark.parametrize("protocol", [2, 4])
def test_safe_pickle_reads_numpy_arrays(tmp_path, protocol):
    path = tmp_path / "mnist.pkl.gz"
    parts = _mnist_like_pickle(path, protocol=protocol)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    arrays = mnist.read_mnist_pickle(path, expected_sha256=sha)
    np.testing.assert_array_equal(arrays["x_train"], parts[0][0])
    np.testing.assert_array_equal(arrays["y_test"], parts[2][1])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/pyro_vae_pwned",))


def test_pickle_with_code_is_rejected(tmp_path):
    payload = pickle.dumps(((_Evil(), 1),), protocol=2)
    with pytest.raises(DataError, match="refusing to load this pickle.*(posix|os).system"):
        load_arrays(payload)
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        f.write(payload)
    with pytest.raises(DataError, match="refusing"):
        mnist.read_mnist_pickle(path, expected_sha256=None)


def test_bad_checksum_is_a_clear_error(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    _mnist_like_pickle(path)
    with pytest.raises(DataError, match="checksum mismatch.*pyro-vae data fetch mnist"):
        mnist.read_mnist_pickle(path)  # the real MNIST checksum


def test_mnist_from_local_pickle_and_cache(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    _mnist_like_pickle(folder / "mnist.pkl.gz")
    # A local file with the wrong checksum is refused, never silently used.
    with pytest.raises(DataError, match="checksum"):
        mnist.mnist(root=tmp_path, download=False)
    monkeypatch.setattr(mnist, "MNIST_SHA256", hashlib.sha256((folder / "mnist.pkl.gz").read_bytes()).hexdigest())
    monkeypatch.setattr(mnist.read_mnist_pickle, "__defaults__", (mnist.MNIST_SHA256,))
    data = mnist.mnist(root=tmp_path, download=False)
    assert data.x_train.shape == (5, 784) and data.x_test.shape == (4, 784) and data.x_shape == (1, 28, 28)
    assert (folder / "mnist.npz").exists()


def test_missing_mnist_without_download_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="pyro-vae data fetch mnist"):
        mnist.mnist(root=tmp_path, download=False)


def _write_frey(path, n=20):
    rng = np.random.default_rng(0)
    ff = rng.integers(0, 256, (560, n)).astype(np.uint8)
    scipy.io.savemat(str(path), {"ff": ff})
    return ff


def test_frey_face_loader_on_small_mat(tmp_path):
    folder = tmp_path / "frey-face"
    folder.mkdir()
    ff = _write_frey(folder / "frey_rawface.mat")
    data = frey_face.frey_face(root=tmp_path, download=False, train_size=15)
    assert data.x_shape == (1, 28, 20) and data.x_train.shape == (15, 560) and data.x_test.shape == (5, 560)
    np.testing.assert_allclose(data.x_train[0].numpy(), ff[:, 0] / 256.0, rtol=1e-6)
    assert (folder / "frey_rawface.mat.sha256").exists()
    # A changed file no longer matches its first-use checksum.
    _write_frey(folder / "frey_rawface.mat", n=21)
    with pytest.raises(DataError, match="changed since first use"):
        frey_face.frey_face(root=tmp_path, download=False, train_size=15)
    with pytest.raises(DataError, match="checksum mismatch"):
        frey_face.frey_face(root=tmp_path, download=False, train_size=15, sha256="0" * 64)


def test_frey_face_wrong_shape_and_missing(tmp_path):
    scipy.io.savemat(str(tmp_path / "bad.mat"), {"ff": np.zeros((100, 3), np.uint8)})
    with pytest.raises(DataError, match="expected \\(560, n_images\\)"):
        frey_face.frey_face(root=tmp_path, download=False, path=str(tmp_path / "bad.mat"))
    with pytest.raises(DataError, match="does not exist.*frey_rawface.mat"):
        frey_face.frey_face(root=tmp_path, download=False)


def test_npz_loader_and_errors(tmp_path):
    x = np.random.default_rng(0).random((50, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50))
    data = external.npz(root=tmp_path, download=False, path=str(tmp_path / "d.npz"), test_fraction=0.2)
    assert data.x_train.shape == (40, 16) and data.x_shape == (4, 4) and data.y_test.shape == (10,)
    np.savez(tmp_path / "noxs.npz", images=x)
    with pytest.raises(DataError, match="needs 'x'"):
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "noxs.npz"))
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="no pickled objects"):
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "obj.npz"))
    with pytest.raises(DataError, match="does not exist"):
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "none.npz"))


def test_data_sizes_generate_synthetic_points_and_cut_stored_ones(tmp_path):
    # synthetic data are generated to the section's sizes (n_train: 5000 gave the first 1000 of its
    # default 1000 before); a smaller size draws the first points of a larger one
    big = dataset_from_config(DataConfig(name="synthetic", n_train=5000, n_test=7))
    small = dataset_from_config(DataConfig(name="synthetic", n_train=50, n_test=3))
    assert big.x_train.shape == (5000, 5) and big.x_test.shape == (7, 5)
    assert torch.equal(small.x_train, big.x_train[:50]) and torch.equal(small.x_test, big.x_test[:3])
    # a stored data set is cut to the sizes, and a size beyond it says so
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((50, 3)).astype(np.float32))
    cut = dataset_from_config(DataConfig(name="npz", path=str(tmp_path / "d.npz"), n_train=10))
    assert cut.x_train.shape == (10, 3) and cut.x_test.shape == (5, 3)
    with pytest.warns(UserWarning, match="data.n_train=100, but the train set of 'npz' holds 45 points; all 45 are used"):
        assert dataset_from_config(DataConfig(name="npz", path=str(tmp_path / "d.npz"), n_train=100)).x_train.shape == (45, 3)


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.array(["a", "b", "c"])}, "x must be numeric, got dtype <U1"),
    ({"x": np.random.rand(6)}, r"x must hold one datapoint per row.*got shape \(6,\)"),
    ({"x_train": np.random.rand(5, 6), "x_test": np.random.rand(2, 7)}, r"differ in shape: \(6,\) and \(7,\)"),
    ({"x": np.random.rand(10, 3), "y": np.array(["a"] * 10)}, "whole-number class labels"),
    ({"x": np.random.rand(10, 3), "y": np.linspace(0, 1, 10)}, "whole-number class labels"),
])
def test_npz_contents_are_checked(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "d.npz"))


def test_npz_takes_whole_float_labels_and_refuses_a_non_archive_without_pickle_advice(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.rand(10, 3), y=np.arange(10.0) % 3)
    data = external.npz(root=tmp_path, download=False, path=str(tmp_path / "d.npz"))
    assert data.y_train.dtype == torch.int64 and data.y_train.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    (tmp_path / "text.npz").write_text("hello")  # np.load would read it as a pickle and suggest allow_pickle
    with pytest.raises(DataError, match="is not a .npz archive") as err:
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "text.npz"))
    assert "allow_pickle" not in str(err.value)


def test_npz_of_8_bit_images_becomes_grey_levels_and_says_so(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (10, 2, 3)).astype(np.uint8)
    pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
    np.savez(tmp_path / "u8.npz", x=pixels)
    data = external.npz(root=tmp_path, download=False, path=str(tmp_path / "u8.npz"), test_fraction=0.2)
    assert data.x_train.dtype == torch.float32 and data.info["scaled"] == "uint8 / 255"
    np.testing.assert_allclose(data.x_train.numpy(), pixels[:8].reshape(8, 6) / 255.0, rtol=1e-6)
    assert data.x_train.min() == 0 and data.x_train.max() == 1
    wide = pixels.astype(np.int64)  # other integer types keep their values (counts, 0/1 data)
    np.savez(tmp_path / "i64.npz", x=wide)
    with pytest.warns(UserWarning, match="whole numbers from 0 to 255 as int64, used as they are.*save them as uint8"):
        kept = external.npz(root=tmp_path, download=False, path=str(tmp_path / "i64.npz"), test_fraction=0.2)
    assert kept.x_train.max() > 1 and "scaled" not in kept.info
    np.savez(tmp_path / "binary.npz", x=(wide > 127).astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/1 data in an integer type: nothing to warn about
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "binary.npz"), test_fraction=0.2)
    np.savez(tmp_path / "mixed.npz", x_train=pixels[:8], x_test=pixels[8:] / 255.0)
    with pytest.raises(DataError, match="x_train is uint8 and x_test float64; save both"):
        external.npz(root=tmp_path, download=False, path=str(tmp_path / "mixed.npz"))


def test_idx_reader(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as f:
        f.write(header + arr.tobytes())
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    (tmp_path / "trunc").write_bytes(header + arr.tobytes()[:5])
    with pytest.raises(DataError, match="truncated"):
        mnist.read_idx(tmp_path / "trunc")


def test_binarization_is_recorded_and_seeded(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.random.default_rng(0).random((30, 9)).astype(np.float32))
    cfg = DataConfig(name="npz", path=str(tmp_path / "g.npz"), binarize="static", binarize_seed=3)
    a, b = dataset_from_config(cfg), dataset_from_config(cfg)
    assert torch.equal(a.x_train, b.x_train) and set(a.x_train.unique().tolist()) <= {0.0, 1.0}
    assert a.info["binarize"] == "static" and a.info["binarize_seed"] == 3
    dyn = dataset_from_config(cfg.model_copy(update={"binarize": "dynamic"}))
    assert not set(dyn.x_train.unique().tolist()) <= {0.0, 1.0}  # resampled per minibatch instead
    assert set(dyn.x_test.unique().tolist()) <= {0.0, 1.0} and "static" in dyn.info["test_binarization"]


def test_support_errors_name_the_fix(tmp_path):
    x = torch.rand(20, 9)
    data = D.Dataset("grey", x[:10], x[10:], (9,))
    with pytest.raises(DataError, match="not binary.*data.binarize"):
        D.check_support(data, Bernoulli(9), "none")
    dynamic = D.Dataset("grey", x[:10], torch.bernoulli(x[10:]), (9,))  # as load_dataset leaves it
    D.check_support(dynamic, Bernoulli(9), "dynamic")  # train binarized per minibatch: fine
    bad = D.Dataset("big", x[:10] * 3, x[10:], (9,))
    with pytest.raises(DataError, match="outside \\[0, 1\\]"):
        D.check_support(bad, ContinuousBernoulli(9), "none")
    with pytest.raises(DataError, match=r"outside \[0, 1\] \(min 0.*, max 2.*\); rescale the data to \[0, 1\] grey levels, then set data.binarize"):
        D.check_support(bad, Bernoulli(9), "none")  # binarizing alone would not do
    with pytest.raises(DataError, match=r"outside \[0, 1\] \(min 0.*, max 2.*\); rescale the data to \[0, 1\]"):
        D.check_support(bad, Beta(9, eps=1e-4), "none")
    with pytest.raises(DataError, match="support of likelihood 'continuous_bernoulli'"):  # the name the config uses
        D.check_support(bad, ContinuousBernoulli(9), "none", "continuous_bernoulli")
    with pytest.raises(DataError, match="features"):
        D.check_support(data, Bernoulli(5), "dynamic")
    with pytest.raises(DataError, match="grey levels in \\[0, 1\\]"):
        np.savez(tmp_path / "big.npz", x=np.full((10, 3), 5.0, np.float32))
        dataset_from_config(DataConfig(name="npz", path=str(tmp_path / "big.npz"), binarize="static"))


def test_support_is_checked_on_every_point_not_a_prefix():
    """A grey level or NaN deep in the data (past the first few thousand points) is found before
    training, not scored silently as a soft Bernoulli target or met as a crash mid-run."""
    x = torch.bernoulli(torch.full((5000, 9), 0.3))
    grey = x.clone()
    grey[4321, 5] = 0.5
    with pytest.raises(DataError, match="train set.*not binary"):
        D.check_support(D.Dataset("late grey", grey, x[:10], (9,)), Bernoulli(9), "none")
    with pytest.raises(DataError, match="test set.*not binary"):
        D.check_support(D.Dataset("late grey", x, grey, (9,)), Bernoulli(9), "static")
    levels = torch.rand(5000, 9)
    levels[4999, 0] = float("nan")
    with pytest.raises(DataError, match="dynamic binarization needs grey levels in \\[0, 1\\].*NaN"):
        D.check_support(D.Dataset("late NaN", levels, x[:10], (9,)), Bernoulli(9), "dynamic")


def test_binarizing_refuses_nan_grey_levels(tmp_path):
    levels = np.random.default_rng(0).random((40, 3)).astype(np.float32)
    levels[37, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=levels)
    with pytest.raises(DataError, match="leaves that range or holds NaN"):
        dataset_from_config(DataConfig(name="npz", path=str(tmp_path / "nan.npz"), binarize="static"))


def test_dynamic_binarization_draws_bernoulli_pixels_from_the_global_generator():
    levels = torch.tensor([0.0, 0.25, 0.7, 1.0]).repeat(50_000, 1)
    torch.manual_seed(3)
    draws = D.binarize_dynamic(levels)
    assert draws.dtype == levels.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert (draws[:, 0] == 0).all() and (draws[:, 3] == 1).all()  # probabilities 0 and 1 are exact
    freq = draws.mean(0)
    assert torch.allclose(freq, levels[0], atol=4 * (0.25 * 0.75 / 50_000) ** 0.5)  # within 4 standard errors
    torch.manual_seed(3)
    assert torch.equal(D.binarize_dynamic(levels), draws)  # seeded like every other draw of a run (resume)


def test_a_file_where_a_data_cache_folder_goes_is_named(tmp_path):
    from pyro_vae.errors import ConfigError

    (tmp_path / "mnist").write_text("mine")
    with pytest.raises(ConfigError, match=f"the MNIST cache {tmp_path / 'mnist'}: .* is a file, not a folder; move or rename that file"):
        mnist.mnist(root=tmp_path, download=True)
    assert (tmp_path / "mnist").read_text() == "mine"


@pytest.mark.parametrize("arrays, message", [
    ((np.zeros((5, 3), np.float32), torch.zeros(2, 3), (3,)), "x_train must be a torch tensor, got a numpy.ndarray; torch.as_tensor"),
    ((torch.zeros(5, 1, 3), torch.zeros(2, 1, 3), (1, 3)), r"x_train must hold flattened datapoints, shape \(n, x_dim\), got \(5, 1, 3\)"),
    ((torch.zeros(5, 3), torch.zeros(0, 3), (3,)), "x_test holds no datapoints"),
    ((torch.zeros(5, 3, dtype=torch.long), torch.zeros(2, 3), (3,)), r"x_train must be float32, .* got torch.int64; x.float\(\)"),
    ((torch.zeros(5, 3, dtype=torch.float64), torch.zeros(2, 3), (3,)), "x_train must be float32, .* got torch.float64"),
    ((torch.zeros(5, 3), torch.zeros(2, 4), (3,)), "x_train has 3 features per point but x_test 4"),
    ((torch.zeros(5, 3), torch.zeros(2, 3), (2, 2)), r"x_shape \(2, 2\) holds 4 values but a point has 3"),
    ((torch.zeros(5, 3), torch.zeros(2, 3), (3,), torch.zeros(4)), r"y_train must be a tensor of one label per point of x_train \(5\), got \(4,\)"),
])
def test_a_dataset_that_the_model_cannot_read_is_refused_when_it_is_made(arrays, message):
    """A Dataset given to the Trainer, or built by a data set of one's own, is checked where it is
    made: not a traceback from inside the first training step."""
    with pytest.raises(DataError, match=message):
        D.Dataset("mine", *arrays)


def test_a_data_set_of_ones_own_that_returns_no_dataset_is_named():
    from pyro_vae.components.registry import DATASETS

    DATASETS.register("test_arrays")(lambda *, root, download: (torch.zeros(5, 3), torch.zeros(2, 3)))
    try:
        with pytest.raises(ConfigError, match=r"dataset 'test_arrays': its builder returned \(tensor\(.*\)\); a dataset's builder returns a "
                                              "pyro_vae.data.datasets.Dataset"):
            D.load_dataset("test_arrays")
    finally:
        DATASETS._entries.pop("test_arrays", None)
