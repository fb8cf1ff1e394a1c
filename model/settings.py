"""model_args: the autoencoder and the normalisation in front of it (model/)."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import setting


@dataclass(frozen=True)
class ModelArgs:
    """Autoencoder and the normalisation in front of it."""

    model: str = setting('autoencoder', 'the FedIoT autoencoder (115-86-58-38-29 and back, Tanh)', choices=('autoencoder',))
    feature_transform: str = setting('log1p', 'log1p (sign*log(1+|x|), tames heavy tails) or none', choices=('log1p', 'none'))
    normalization: str = setting('zscore', 'zscore (mean/std) or minmax, fitted on training benign rows only', choices=('zscore', 'minmax'))
