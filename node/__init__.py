"""The ``dtnode`` binary: config, identity, roles, training and aggregation, the local devnet."""

__version__ = "0.1.0"
