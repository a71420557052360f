"""The generated dataset: real JPEG files made once, on first use, so the applications run with no data to hand.

It is the applications' default data, so that a new user sees the whole path (files, region decoding, training)
work. The files are an `ImageFolder` layout, ``root/train/<class>/*.jpg`` and ``root/validation/<class>/*.jpg``,
written under the user's cache (``$IPU_CNN_CACHE``, else ``$XDG_CACHE_HOME/ipu_cnn``, else ``~/.cache/ipu_cnn``) in
``generated/<parameters>-<hash>``. Every byte is a function of the parameters (and of the Pillow and libjpeg versions
that encode them).

- ``render``: the images themselves, drawn and encoded one at a time (`generate_image`, `SHAPES`).
- ``spec``: `GeneratedSpec`, the parameters that determine a set and name its cache folder.
- ``dataset``: the set on disk (`make_generated_dataset`) and its splits as datasets (`GeneratedImages`), made whole
  and once by the cache's folder publishing (`ipu_cnn.data._cache`).
"""

from __future__ import annotations

from ipu_cnn.data._cache import MANIFEST_NAME, cache_dir
from ipu_cnn.data.generated.dataset import GeneratedImages, default_generated_root, make_generated_dataset
from ipu_cnn.data.generated.render import GENERATOR_VERSION, SHAPES, generate_image
from ipu_cnn.data.generated.spec import GeneratedSpec

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "SHAPES",
    "GeneratedImages",
    "GeneratedSpec",
    "cache_dir",
    "default_generated_root",
    "generate_image",
    "make_generated_dataset",
]
