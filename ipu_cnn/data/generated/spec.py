"""`GeneratedSpec`: the parameters that determine a generated set, and the cache identity they give it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ipu_cnn.data.generated.render import GENERATOR_VERSION, SHAPES

__all__ = ["GeneratedSpec"]


@dataclass(frozen=True)
class GeneratedSpec:
    """The parameters that determine a generated set; equal specs give byte-identical files.

    Attributes:
        num_classes: number of classes (folders ``000_disc``, ``001_triangle``, ...).
        images_per_class: training images per class.
        val_images_per_class: validation images per class.
        seed: selects the images.
        min_size: smallest image side in pixels.
        max_size: largest image side in pixels.
    """

    num_classes: int = 10
    images_per_class: int = 100
    val_images_per_class: int = 20
    seed: int = 0
    min_size: int = 96
    max_size: int = 640

    def __post_init__(self) -> None:
        """Refuse parameters that cannot make a usable set, saying which and why."""
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 to make a classification task, got {self.num_classes}")
        if self.images_per_class < 1 or self.val_images_per_class < 0:
            raise ValueError(f"need images_per_class >= 1 and val_images_per_class >= 0, got {self.images_per_class} "
                             f"and {self.val_images_per_class}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 16 <= self.min_size <= self.max_size <= 4096:
            raise ValueError(f"need 16 <= min_size <= max_size <= 4096, got min_size={self.min_size}, "
                             f"max_size={self.max_size}")

    @property
    def class_names(self) -> list[str]:
        """Folder names in label order; zero-padded so that sorted order (ImageFolder's) is label order."""
        width = max(3, len(str(self.num_classes - 1)))
        return [f"{c:0{width}d}_{SHAPES[c % len(SHAPES)]}" for c in range(self.num_classes)]

    def count(self, split: str) -> int:
        """Images per class in a split."""
        return self.images_per_class if split == "train" else self.val_images_per_class

    def digest(self) -> str:
        """A short hash of the parameters and the generator version: the cache folder's identity."""
        blob = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def folder_name(self) -> str:
        """Readable and unique cache folder name, e.g. ``c10-n100-v20-s0-96to640-1a2b3c4d5e6f``."""
        return (f"c{self.num_classes}-n{self.images_per_class}-v{self.val_images_per_class}-s{self.seed}-"
                f"{self.min_size}to{self.max_size}-{self.digest()}")
