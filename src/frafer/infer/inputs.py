"""What `predict` reads: image files found recursively, each decoded to RGB or given one status that says why not.

Statuses (also the `status` field of every output line):
    ok · no face · not an image · corrupt · too large · unreadable
One bad file never stops a batch; a decompression bomb is refused from its header, before any pixel is decoded.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from frafer.data.readers.images import IMAGE_EXTENSIONS, UnreadableImage, to_rgb

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: far above any camera, far below a bomb's billions


class BadInput(Exception):
    """One input that cannot be used, with its status (see the module docstring) and a reason."""

    def __init__(self, status: str, reason: str):
        self.status, self.reason = status, reason
        super().__init__(f"{status}: {reason}")


@dataclass
class Source:
    path: Path
    kind: str  # "image" | "video" | "other"


def list_inputs(inputs: list[str | Path]) -> list[Source]:
    """Files and folders (searched recursively, sorted) → sources. Inside folders only hidden files are passed
    over: anything else is listed, so a file that is not an image gets its own status instead of vanishing, and so
    does a link that leads nowhere (dangling, or a loop): it is listed and read as 'unreadable'. Links to folders
    are not followed (a loop of them would never end)."""
    found: list[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not path.is_symlink() or path.is_dir() and path.resolve().is_dir():
            for child in sorted(_walk(path)):
                found.append(Source(child, _kind(child)))
        else:
            found.append(Source(path, _kind(path)))
    return found


def _walk(folder: Path):
    """Every non-hidden entry below `folder` that is not a folder: files, and links to files or to nothing."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith("."):
                yield Path(root) / name
        for name in dirs:  # a link to a folder is listed by os.walk as a folder, and not entered
            link = Path(root) / name
            if link.is_symlink() and not link.resolve().is_dir():
                yield link


def file_key(path: str | Path) -> str:
    """How a file is named in every output: its path as given, with bytes that are not valid UTF-8 (a name from
    another system's encoding) and control characters (a newline in a name) shown as backslash escapes, so that
    the name can always be written, and read back one line per record."""
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return "".join(c if c >= " " and c != "\x7f" else f"\\x{ord(c):02x}" for c in text)  # no raw newline


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else "other"


@contextmanager
def _pillow_limit(max_pixels: int):
    """Let Pillow open images up to `max_pixels` (its own bomb check refuses over 2 × MAX_IMAGE_PIXELS, 179 MP by
    default); frafer's check against `max_pixels` still runs on the header, before any pixel is decoded."""
    saved = Image.MAX_IMAGE_PIXELS
    if saved is not None and max_pixels > 2 * saved:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_image(path: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB as displayed (EXIF orientation applied); raises BadInput with its status.

    `path` may also be the file's bytes (an upload): the same checks and statuses apply.
    """
    data = path if isinstance(path, bytes) else None
    path = Path("<upload>") if data is not None else Path(path)
    try:
        with warnings.catch_warnings(), _pillow_limit(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as image:
                if image.width * image.height > max_pixels:
                    raise BadInput("too large", f"{image.width}x{image.height} pixels is over the limit of "
                                                f"{max_pixels:,} (--max-pixels)")
                try:
                    image.load()
                except (OSError, SyntaxError, ValueError, EOFError) as err:
                    raise BadInput("corrupt", f"cannot decode ({type(err).__name__}: {err})") from None
                image = ImageOps.exif_transpose(image)
                rgb = to_rgb(image, path)
    except BadInput:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        what = "a link that leads nowhere" if path.is_symlink() else type(err).__name__
        raise BadInput("unreadable", f"{what}: {err.strerror or err}") from None
    except Image.UnidentifiedImageError:
        empty = len(data) == 0 if data is not None else path.stat().st_size == 0
        reason = "empty file (0 bytes)" if empty else "not an image Pillow can read"
        raise BadInput("not an image", reason) from None
    except Image.DecompressionBombError as err:
        raise BadInput("too large", str(err)) from None
    except UnreadableImage as err:
        raise BadInput("corrupt", err.reason) from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOENT, errno.EACCES, errno.EISDIR):  # e.g. a link that loops
            raise BadInput("unreadable", f"{err.strerror or err}") from None
        raise BadInput("corrupt", f"{type(err).__name__}: {err}") from None
    except (SyntaxError, ValueError, EOFError) as err:
        raise BadInput("corrupt", f"{type(err).__name__}: {err}") from None
    return np.asarray(rgb)


def as_rgb_array(image, colour: str = "RGB") -> np.ndarray:
    """A PIL image or a numpy array (H, W, 3) uint8 in `colour` order ("RGB" or "BGR", as OpenCV gives) or (H, W)
    grey → (H, W, 3) uint8 RGB."""
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image, "<PIL image>"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    array = array[..., :3]
    if colour.upper() == "BGR":
        array = array[..., ::-1]
    elif colour.upper() != "RGB":
        raise ValueError(f"colour order must be 'RGB' or 'BGR', got {colour!r}")
    return np.ascontiguousarray(array)
