"""pyro-vae: variational autoencoders in Pyro (Kingma & Welling 2013, AEVB) with honest log p(x)."""

__version__ = "0.1.0"
