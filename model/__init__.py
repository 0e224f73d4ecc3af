"""The CAGE model: VQ autoencoders, the DINOv2 feature backbone and the flow-matching vector-field regressor.

`from model import Model` works as in the original README.
"""
from model.model import Model

__all__ = ["Model"]
