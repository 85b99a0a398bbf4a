"""Data sets by name (``data: {name: mnist, binarize: dynamic}``), registered in ``DATASETS``:
MNIST and Fashion-MNIST (:mod:`~pyro_vae.data.mnist`), Frey Face (:mod:`~pyro_vae.data.frey_face`),
synthetic linear-Gaussian data (:mod:`~pyro_vae.data.synthetic`), and data a user has: ``.npz``
files, folders of images and ``torch.utils.data.Dataset`` classes (:mod:`~pyro_vae.data.external`).
:mod:`~pyro_vae.data.datasets` turns a config's ``data:`` section into a run's tensors (cut,
binarized, fingerprinted, checked against the likelihood's support); :mod:`~pyro_vae.data.cache`
keeps the data folder. Importing this package registers the data sets.
"""

from pyro_vae.data import external, frey_face, mnist, synthetic  # noqa: F401  (each registers its data sets)

from pyro_vae.data.datasets import Dataset, binarize, binarize_dynamic, check_support, fingerprint, load_dataset

__all__ = ["Dataset", "binarize", "binarize_dynamic", "check_support", "fingerprint", "load_dataset"]
