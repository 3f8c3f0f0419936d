"""Data sets and pipelines: token memmaps (OpenWebText, KJV) and image classification
(ImageNet, sklearn digits, Fashion-MNIST), built by :func:`build_data` into a :class:`DataBundle`.

Names load on first use (:mod:`weyl.lazy_exports`): ``weyl.data.data_config`` stays light."""

from weyl.lazy_exports import lazy_exports

_EXPORTS = {
    "BatchStream": "weyl.data.bundle",
    "DataBundle": "weyl.data.bundle",
    "build_data": "weyl.data.factory",
}
__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
