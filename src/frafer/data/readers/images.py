"""Reading one image file into an 8-bit RGB PIL image, with per-file failures made explicit; a list of images as a
dataset for the frozen-network pass.

A dataset of millions of web images always holds a few broken files. Those are not user
mistakes, so they are reported as `UnreadableImage` (which loaders skip and count), never as
`FraferError` (which stops the program).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels, origin top-left

# What Pillow raises for a file it cannot decode (empty, not an image, truncated, corrupt, too big).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

_strict_lock = threading.Lock()


class UnreadableImage(Exception):
    """One image file that cannot be used: loaders skip it and count it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_file(path: str | Path) -> bool:
    """True when the file name ends in one of IMAGE_EXTENSIONS (any letter case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def first_images(root: str | Path, count: int) -> list[Image.Image]:
    """The first `count` readable images under `root`, in sorted path order (unreadable files passed over): the same
    faces every time, for checks and figures."""
    images = []
    for path in sorted(Path(root).rglob("*")):
        if len(images) == count:
            break
        if path.is_file() and is_image_file(path):
            try:
                images.append(load_rgb(path))
            except UnreadableImage:
                continue
    return images


def load_rgb(path: str | Path, box: Sequence[float] | None = None) -> Image.Image:
    """Decode `path` completely and return it as an RGB image, optionally cropped to `box`.

    `box` is (x, y, w, h); it is clipped to the image, so a face box that pokes past the border
    still works. Decoding is strict even if some other library set Pillow's
    LOAD_TRUNCATED_IMAGES: a truncated file fails here rather than training on grey padding.
    Transparent pixels are composited on black; 16-bit images are scaled to 8 bits. EXIF
    orientation is not applied, so boxes refer to the pixels as stored (as dataset CSVs do).
    Raises UnreadableImage naming the path and the reason for anything that is not a usable image.
    """
    try:
        with _strict_decoding(), Image.open(path) as image:
            image.load()  # decode now: broken files must fail here, not inside a transform
            if image.width < 1 or image.height < 1:
                raise UnreadableImage(path, f"zero-size image ({image.width}x{image.height})")
            rgb = to_rgb(image, path)
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except _DECODE_ERRORS as err:
        raise UnreadableImage(path, _describe_decode_error(path, err)) from None
    if box is not None:
        rgb = rgb.crop(_clip_box(box, rgb.size, path))
    return rgb


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make Pillow raise on truncated files for the duration, whatever the global flag says.

    The flag is only touched (under a lock) in the rare case someone set it True.
    """
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _strict_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _describe_decode_error(path: str | Path, err: BaseException) -> str:
    """A short reason for a decode failure; an empty file gets its own, clearer reason."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    if isinstance(err, Image.UnidentifiedImageError):
        return "not a readable image (unknown format, or a corrupt or zero-size header)"
    if "truncated" in str(err):
        return f"truncated image ({err})"
    return f"cannot decode image ({type(err).__name__}: {err})"


def to_rgb(image: Image.Image, path: str | Path) -> Image.Image:
    """Convert any Pillow mode (1, L, P, LA, PA, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode.startswith("I") or image.mode == "F":
        return _high_depth_to_rgb(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise UnreadableImage(path, f"unsupported colour mode {image.mode} ({err})") from None


def _has_alpha(image: Image.Image) -> bool:
    """True for modes with an alpha band and for palette/grey images with a transparent colour."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (I;16*, or I holding 16-bit values) or float grey image to 8-bit RGB.

    Pillow's own conversion clips values above 255 instead of scaling, which would turn most of
    a 16-bit image white. Float images are taken to be in 0..255 and clipped.
    """
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    if image.mode != "F":
        values = np.clip(values, 0, 65535) / 257.0  # 65535 -> 255
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _clip_box(box: Sequence[float], size: tuple[int, int], path: str | Path) -> tuple[int, int, int, int]:
    """Turn (x, y, w, h) into a Pillow (left, top, right, bottom) box clipped to an image of `size`."""
    x, y, w, h = (int(round(v)) for v in box)
    if w <= 0 or h <= 0:
        raise UnreadableImage(path, f"degenerate crop box (x={x}, y={y}, w={w}, h={h})")
    width, height = size
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, width), min(y + h, height)
    if right <= left or bottom <= top:
        raise UnreadableImage(
            path, f"crop box (x={x}, y={y}, w={w}, h={h}) lies outside the {width}x{height} image"
        )
    return left, top, right, bottom


class ImageItems(Dataset):
    """`items[i]` decoded by `load` (→ RGB PIL image) and transformed: (tensor, i), or None when unreadable.

    The one dataset of the frozen-network pass: items are paths (`load_rgb`) or FER samples (`load_sample_image`).
    """

    def __init__(self, items: Sequence, load: Callable[[object], Image.Image], transform: Callable) -> None:
        self.items, self.load, self.transform = items, load, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return self.transform(self.load(self.items[i])), i
        except UnreadableImage:
            return None


def collate_indexed(batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """ImageItems batch → (images (B, 3, H, W), their item indices (B,), number unreadable)."""
    good = [b for b in batch if b is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), len(batch) - len(good)
