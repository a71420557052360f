"""The generated dataset on disk: the demo images written once into the cache as an ImageNet-layout folder.

The files are ``root/train/<class>/*.jpg`` and ``root/validation/<class>/*.jpg``, by default under the user's cache in
``generated/<parameters>-<hash>``. A set is made whole or not at all, and by one process however many ask at once
(`ipu_cnn.data._cache.make_folder`); a folder whose manifest is missing or disagrees with its files is made again.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

from ipu_cnn.data._cache import FolderKind, cache_dir, make_folder
from ipu_cnn.data.datasets import imagenet
from ipu_cnn.data.datasets.base import PathLike
from ipu_cnn.data.datasets.folder import ImageFolder
from ipu_cnn.data.generated.render import GENERATOR_VERSION, SPLITS, generate_image
from ipu_cnn.data.generated.spec import GeneratedSpec

__all__ = ["GeneratedImages", "default_generated_root", "make_generated_dataset"]

#: How the cache tells a generated set from other folders.
_KIND = FolderKind(format="ipu_cnn.generated", tag_name=".ipu_cnn_generated", maker="ipu_cnn.data.generated",
                   what="generated dataset")


def default_generated_root(spec: GeneratedSpec) -> Path:
    """Where the set of `spec` lives in the cache: ``cache_dir()/generated/<parameters>-<hash>``."""
    return cache_dir() / "generated" / spec.folder_name()


def _file_name(split: str, index: int) -> str:
    """File name of an image within its class folder."""
    return f"{split}_{index:05d}.jpg"


def _manifest(spec: GeneratedSpec) -> dict[str, Any]:
    """What a complete set records about itself (deterministic: no timestamps)."""
    import PIL

    return {
        "generator_version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "classes": spec.class_names,
        "counts": {split: spec.count(split) for split in SPLITS},
        "pillow": PIL.__version__,
    }


def _is_complete(root: Path, spec: GeneratedSpec) -> bool:
    """Whether `root` holds the whole set of `spec`: a matching manifest and every class folder's file count.

    Counting costs one directory listing per class folder, no stat per file. A manifest for other parameters is an
    error: the folder is someone else's set, and silently replacing it could destroy it.
    """
    manifest = _KIND.read_manifest(root)
    if manifest is None:
        return False
    if manifest.get("spec") != asdict(spec) or manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{root} holds a generated dataset with other parameters ({manifest.get('spec')}, generator "
                         f"version {manifest.get('generator_version')}), not {asdict(spec)} (version "
                         f"{GENERATOR_VERSION}): pass another root, or delete that folder to make it again")
    for split in SPLITS:
        want = spec.count(split)
        for name in spec.class_names:
            folder = root / split / name
            try:
                with os.scandir(folder) as it:
                    have = sum(1 for entry in it if entry.name.endswith(".jpg"))
            except OSError:
                return False
            if have != want:
                return False
    return True


def _write_set(spec: GeneratedSpec, folder: Path, progress: bool | None) -> None:
    """Write every image of `spec` into `folder` (the cache adds the tag and the manifest around them)."""
    total = spec.num_classes * (spec.images_per_class + spec.val_images_per_class)
    bar = None
    if progress is not False:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="generating demo JPEGs", unit="img", delay=1.0, leave=False,
                   disable=None if progress is None else False)
    try:
        for split in SPLITS:
            for label, name in enumerate(spec.class_names):
                class_dir = folder / split / name
                class_dir.mkdir(parents=True)
                for index in range(spec.count(split)):
                    (class_dir / _file_name(split, index)).write_bytes(generate_image(spec, split, label, index))
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def make_generated_dataset(root: PathLike, num_classes: int = 10, images_per_class: int = 100, seed: int = 0, *,
                           val_images_per_class: int = 20, min_size: int = 96, max_size: int = 640,
                           progress: bool | None = None) -> Path:
    """Make the generated set of these parameters in exactly `root`, unless it is already there and complete.

    `root` must be new, empty, or a set this function made: a complete set with these parameters is kept as it is (no
    file is touched); an incomplete one (manifest missing, files missing) is deleted and made again; a set with other
    parameters, or a non-empty folder that is not a generated set, is an error rather than being overwritten. Safe to
    call from several processes at once: one makes the set, the others wait for it and use it.

    Returns:
        `root` as a Path, holding ``train/<class>/*.jpg``, ``validation/<class>/*.jpg`` and the manifest.
    """
    spec = GeneratedSpec(num_classes=num_classes, images_per_class=images_per_class,
                         val_images_per_class=val_images_per_class, seed=seed, min_size=min_size, max_size=max_size)
    return _ensure(spec, Path(root).expanduser(), progress)


def _ensure(spec: GeneratedSpec, target: Path, progress: bool | None) -> Path:
    """Make sure `target` holds the complete set of `spec` (see `make_generated_dataset`)."""
    return make_folder(target, _KIND, is_complete=lambda root: _is_complete(root, spec),
                       write=lambda staging: _write_set(spec, staging, progress), manifest=_manifest(spec),
                       description=f"({spec.num_classes} classes, {spec.images_per_class} + "
                                   f"{spec.val_images_per_class} images per class)")


class GeneratedImages:
    """The generated dataset: made on first use (once, cached), then read as `ImageFolder` splits.

    Args:
        root: folder for the set (see `make_generated_dataset` for what it may hold). Default:
            `default_generated_root`, a folder per parameter set in the user's cache (``$IPU_CNN_CACHE`` overrides).
        num_classes, images_per_class, seed: as for `make_generated_dataset`.
        val_images_per_class: validation images per class.
        min_size, max_size: range of image sides in pixels.
        progress: progress bar while generating: True, False or None (auto: on a terminal, after a second).
    """

    def __init__(self, root: PathLike | None = None, num_classes: int = 10, images_per_class: int = 100,
                 seed: int = 0, *, val_images_per_class: int = 20, min_size: int = 96, max_size: int = 640,
                 progress: bool | None = None) -> None:
        self.spec = GeneratedSpec(num_classes=num_classes, images_per_class=images_per_class,
                                  val_images_per_class=val_images_per_class, seed=seed, min_size=min_size,
                                  max_size=max_size)
        target = default_generated_root(self.spec) if root is None else Path(root).expanduser()
        self.root: Path = _ensure(self.spec, target, progress)

    @property
    def classes(self) -> list[str]:
        """Class folder names in label order."""
        return self.spec.class_names

    @cached_property
    def train(self) -> ImageFolder:
        """The training split."""
        return self.split("train")

    @cached_property
    def validation(self) -> ImageFolder:
        """The validation split."""
        return self.split("validation")

    def split(self, name: str) -> ImageFolder:
        """A split by name, as `ImageNet` names them: ``"train"`` or ``"validation"`` (alias ``"val"``)."""
        split = imagenet.SPLITS.get(name)
        if split is None:
            raise ValueError(f"unknown split {name!r} of the generated dataset: use 'train' or 'validation' "
                             f"(alias 'val')")
        if split == "validation" and self.spec.val_images_per_class == 0:
            raise ValueError("this generated dataset has no validation images (val_images_per_class=0)")
        # The class list is the spec's rather than a scan of the folders, so the labels are the generator's.
        return ImageFolder(imagenet.ImageNet.split_folder(str(self.root), split), extensions=(".jpg",),
                           classes=self.spec.class_names)

    def __repr__(self) -> str:
        return f"GeneratedImages({str(self.root)!r}, {self.spec})"
