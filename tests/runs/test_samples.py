"""Samples written as an array, chunk by chunk."""

import pytest
import torch


def test_samples_are_written_in_chunks_to_an_array_that_fits_the_disk(tmp_path, monkeypatch):
    import collections

    import numpy as np

    from pyro_vae.config.build import vae_from_config
    from pyro_vae.errors import ConfigError
    from pyro_vae.runs import samples
    from tests.conftest import tiny_config

    vae = vae_from_config(tiny_config().model, (5,))
    decoded = []
    original = vae.sample_means
    monkeypatch.setattr(vae, "sample_means", lambda n: decoded.append(n) or original(n))
    torch.manual_seed(0)
    out = samples.write_sample_means(vae, tmp_path / "s.npy", 10, chunk=4)
    assert decoded == [4, 4, 2]  # never more than one chunk decoded at once
    array = np.load(out)
    assert array.shape == (10, 5) and array.dtype == np.float32 and np.isfinite(array).all()
    assert len({row.tobytes() for row in array}) == 10  # every row its own draw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]  # no temporary file left
    # a file larger than the disk's free space is refused before anything is written
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(samples.shutil, "disk_usage", lambda _p: Usage(10**6, 10**6 - 100, 100))
    with pytest.raises(ConfigError, match=r"10 samples of 5 values need 200 bytes on disk and .* has 100 bytes free; ask for fewer"):
        samples.write_sample_means(vae, tmp_path / "t.npy", 10)
    assert not (tmp_path / "t.npy").exists()
    # a disk that fills up while writing: an error naming the file, the old file kept, no temporary left
    monkeypatch.undo()

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    with pytest.raises(ConfigError, match=r"cannot write .*s.npy \(No space left on device\); free space"):
        samples.write_sample_means(vae, out, 10, chunk=4)
    assert np.array_equal(np.load(out), array) and sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]
