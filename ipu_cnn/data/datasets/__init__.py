"""Dataset indexes: which files (or generated images) make a dataset, and their labels.

A dataset here is only an index. The loader hands `paths` to the native decoder in bulk and `labels` to the training
loop, so both are computed once, when the dataset is built, and every accessor after that is free. Nothing in this
package opens an image. One reader per module:

- `ImageFolder` (``folder``): torchvision's ``root/<class>/<image>`` layout, with torchvision's class and sample order.
- `ImageNet` (``imagenet``): an `ImageFolder` over ``root/train`` or ``root/validation`` (``root/val``).
- `FileList` (``filelist``): a CSV, TSV or space-separated list of ``path,label`` rows (ImageNet's flat validation
  folder and its labels file, or any custom split).
- `TarShards` (``shards``): WebDataset-layout tar shards (``KEY.jpg`` + ``KEY.cls``), read through a per-shard index
  of member offsets with one open descriptor per shard and thread.
- `CIFAR10` (``cifar``): CIFAR-10's python-pickle batches read into one raw-pixel array (``pixels``), for the loader's
  raw-pixel path; `download_cifar10` fetches them.
- `RandomImages` (``random_images``): random uint8 images made in memory, no files and no decoding, for
  device-throughput runs.

``base`` holds the `Dataset` protocol and `FileDataset`, the index the file readers share; ``_scan`` the folder
scanning that `ImageFolder` and `ImageNet` share.
"""

from __future__ import annotations

from ipu_cnn.data.datasets._scan import IMG_EXTENSIONS, find_class_folders
from ipu_cnn.data.datasets.base import Dataset, FileDataset
from ipu_cnn.data.datasets.cifar import CIFAR10, default_cifar10_root, download_cifar10
from ipu_cnn.data.datasets.filelist import FileList
from ipu_cnn.data.datasets.folder import ImageFolder
from ipu_cnn.data.datasets.imagenet import ImageNet
from ipu_cnn.data.datasets.random_images import RandomImages
from ipu_cnn.data.datasets.shards import TarShards, expand_shards

__all__ = [
    "IMG_EXTENSIONS",
    "find_class_folders",
    "Dataset",
    "FileDataset",
    "ImageFolder",
    "ImageNet",
    "FileList",
    "RandomImages",
    "TarShards",
    "expand_shards",
    "CIFAR10",
    "default_cifar10_root",
    "download_cifar10",
]
