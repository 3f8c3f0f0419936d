"""A small ImageFolder tree on disk for the image-pipeline and toy-recipe tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_image_folder(
    root: Path,
    classes: Sequence[str],
    per_split: Mapping[str, int],
    file_name: str = "{i}.png",
    **save_options: Any,
) -> Path:
    """``<root>/<split>/<class>/<file_name>``: 40×48 RGB noise with the class's channel
    saturated (a colour a model can learn); ``file_name`` is formatted with ``cls`` and ``i``."""
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                pixels[..., c] = 255
                Image.fromarray(pixels).save(
                    folder / file_name.format(cls=name, i=i), **save_options
                )
    return root
