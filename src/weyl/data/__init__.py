"""Data sets and pipelines: token memmaps (OpenWebText, KJV) and image classification
(ImageNet, sklearn digits, Fashion-MNIST), built by :func:`build_data` into a :class:`DataBundle`."""

from weyl.data.bundle import BatchStream, DataBundle
from weyl.data.factory import build_data

__all__ = ["BatchStream", "DataBundle", "build_data"]
