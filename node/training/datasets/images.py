"""Image folders: ``ROOT/<class>/<image>.png|.jpg|.jpeg``, one sub-folder per class (sorted names are the class ids).

Images are decoded by Pillow (PNG and JPEG only, checked by content, not by name) into uint8 samples of shape
channels × height × width: one channel when every image is greyscale, else three (RGB; alpha dropped). Every image
must have the first one's size unless a size is given, to which each is resized (bilinear).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from node.training.data import ArraySet
from node.training.datasets.source import LoadedDataset
from node.training.errors import DatasetError
from storage.dataset import MAX_CLASSES, DatasetInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_FORMATS = ("PNG", "JPEG")
_GREY_MODES = ("1", "L", "I;16", "I")


def _listing(root: Path) -> list[tuple[str, list[Path]]]:
    if not root.is_dir():
        raise DatasetError(f"{root}: an image folder is a directory with one sub-folder of images per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if stray:
        raise DatasetError(f"{root}: files outside a class sub-folder ({', '.join(stray[:5])}); put each image in "
                           "the sub-folder of its class")
    if len(classes) < 2:
        raise DatasetError(f"{root}: found {len(classes)} class sub-folder(s); classification needs at least 2")
    if len(classes) > MAX_CLASSES:
        raise DatasetError(f"{root}: {len(classes)} classes, over the limit of {MAX_CLASSES}")
    out: list[tuple[str, list[Path]]] = []
    for folder in classes:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        bad = [p for p in files if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            raise DatasetError(f"{bad[0]}: not a .png/.jpg/.jpeg image file (a class folder holds only images)")
        if not files:
            raise DatasetError(f"{folder}: empty class folder (no images)")
        out.append((folder.name, files))
    return out


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        if image.format not in _FORMATS:
            raise DatasetError(f"{path}: a {image.format} image; only PNG and JPEG are read")
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: bad image ({exc})") from exc
    return image


def _pixels(image: Image.Image, path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if (image.height, image.width) != size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    try:
        array = np.asarray(image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: bad image ({exc})") from exc
    return array[None] if array.ndim == 2 else np.moveaxis(array, 2, 0)


def load_image_folder(root: Path, *, licence: str, size: tuple[int, int] | None = None) -> LoadedDataset:
    """Decode every image; refuses a bad image, a size other than the first image's (unless ``size``), and empty or
    missing class folders, naming the file or folder."""
    listing = _listing(root)
    paths = [(label, p) for label, (_, files) in enumerate(listing) for p in files]
    grey = True
    first: tuple[int, int] | None = None
    for _, path in paths:  # headers only: the mode decides the channels, the first size the shape
        try:
            with Image.open(path) as header:
                grey = grey and header.mode in _GREY_MODES
                if first is None:
                    first = (header.height, header.width)
                elif size is None and (header.height, header.width) != first:
                    raise DatasetError(f"{path}: image is {header.width}x{header.height} but the first image is "
                                       f"{first[1]}x{first[0]}; pass --image-size HxW to resize all to one size")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{path}: bad image ({exc})") from exc
    target = size or first
    assert target is not None
    mode = "L" if grey else "RGB"
    samples = np.stack([_pixels(_open(path), path, mode, target) for _, path in paths])
    labels = np.asarray([label for label, _ in paths], dtype=np.uint8 if len(listing) <= 256 else np.int32)
    info = DatasetInfo(format="image-folder", task="classification", licence=licence,
                       input_shape=tuple(int(d) for d in samples.shape[1:]), input_dtype="uint8",
                       classes=tuple(name for name, _ in listing))
    return LoadedDataset(ArraySet(samples, labels), info)
