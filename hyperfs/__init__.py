"""hyperfs: a peer-to-peer Hyperdrive as an ordinary folder."""

__version__ = "0.1.0"
