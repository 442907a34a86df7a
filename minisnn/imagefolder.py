"""ImageNet-style evaluation folders: ``DIR/<class>/<image>``, streamed in batches.

The layout the sub-bit authors' README gives for the ImageNet validation
set: one subfolder per class, class index = position in the sorted
subfolder names. Each image is preprocessed as torchvision's standard
evaluation transform: shorter side resized to 256 (bilinear), centre crop
224, scaled to [0, 1], normalised with the ImageNet mean and std; NCHW
float32. Images are decoded one batch at a time, so memory stays bounded
by the batch, whatever the folder's size.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
RESIZE, CROP = 256, 224
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")


def list_images(root):
    """(paths, labels, classes) of an image folder, in sorted order; refuses
    (ValueError naming the folder) a missing folder, no class subfolder, or
    a class without images."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory of class subfolders")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class subfolders (expected {root}/<class>/<image>)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(f for f in (root / name).iterdir()
                       if f.is_file() and f.suffix.lower() in EXTENSIONS)
        if not found:
            raise ValueError(f"{root / name}: class folder without images "
                             f"({', '.join(EXTENSIONS)})")
        paths += found
        labels += [label] * len(found)
    return paths, np.array(labels, np.int64), classes


def preprocess(image, resize=RESIZE, crop=CROP):
    """A PIL image -> float32 (3, crop, crop): resize the shorter side to
    ``resize`` (bilinear), centre crop, scale to [0, 1], normalise, as
    torchvision's Resize(256), CenterCrop(224), ToTensor, Normalize."""
    image = image.convert("RGB")
    w, h = image.size
    # torchvision's rounding: the long side truncated, the crop offsets rounded half-even
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    image = image.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    x = np.asarray(image, np.float32) / np.float32(255)
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def batches(root, batch_size=50, limit=None, resize=RESIZE, crop=CROP):
    """Yield (images float32 (B, 3, crop, crop), labels int64 (B,)) over the
    folder in order; ``limit`` takes the first images per class."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, found {batch_size}")
    paths, labels, _ = list_images(root)
    if limit is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)])
        keep.sort()
        paths, labels = [paths[i] for i in keep], labels[keep]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        out = np.empty((len(chunk), 3, crop, crop), np.float32)
        for i, path in enumerate(chunk):
            try:
                with Image.open(path) as image:
                    out[i] = preprocess(image, resize, crop)
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"{path}: not a readable image ({exc})") from None
        yield out, labels[start:start + len(chunk)]


def looks_like_image_folder(path):
    """Whether ``path`` is a directory holding class subfolders of images
    (and not a CIFAR-10 source, which has train/ and test/ or batch files)."""
    path = Path(path)
    if not path.is_dir():
        return False
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    return bool(subdirs) and {d.name for d in subdirs} != {"train", "test"} and not any(
        f.name.startswith("data_batch") for f in os.scandir(path))
