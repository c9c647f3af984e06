"""Image transforms: the BYOL two-view augmentation, the FER training augmentation and the plain eval transform.

Everything is torchvision.transforms.v2 on tensors (the PIL image is converted once, up front), and
every random draw comes from torch's global RNG, so seeding torch reproduces a sample exactly.

Speed notes (measured at 64/112 px on one core): the crop and flip run on uint8 (the antialiased
uint8 resize is the fast path), the colour ops on float32, because torchvision's hue shift and
blur convert uint8 to float internally and back, which costs more than converting once. The blur
runs with float32 subnormals flushed to zero: for small sigmas the 2-D Gaussian kernel holds
subnormal weights (e.g. exp(-100) ~ 4e-44) that make the convolution several times slower while
contributing nothing to the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from PIL import Image
from torchvision.transforms import v2

from frafer.errors import FraferError

VGGFACE2_MEAN = (0.5231, 0.4044, 0.3489)
VGGFACE2_STD = (0.2536, 0.2194, 0.2070)

ImageTransform = Callable[[Image.Image], torch.Tensor]


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side of about 10% of the image side, at least 3 (BYOL: 23 at 224 px)."""
    kernel = max(3, round(0.1 * size))
    return kernel if kernel % 2 == 1 else kernel + 1


def build_view_transform(
    size: int,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    flip_p: float = 0.5,
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
    jitter_p: float = 0.8,
    grey_p: float = 0.2,
    blur_p: float = 1.0,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    solarize_p: float = 0.0,
    mean: Sequence[float] = VGGFACE2_MEAN,
    std: Sequence[float] = VGGFACE2_STD,
) -> ImageTransform:
    """One BYOL view: PIL image -> normalised float tensor (3, size, size).

    Order as in BYOL: random resized crop, horizontal flip, colour jitter (brightness, contrast,
    saturation, hue; in random order) with p=jitter_p, greyscale with p=grey_p, Gaussian blur with
    p=blur_p (sigma uniform in blur_sigma), solarise (x -> 1 - x for x >= 0.5, i.e. uint8 >= 128)
    with p=solarize_p, then normalise with mean/std.
    """
    brightness, contrast, saturation, hue = jitter
    blur = v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=blur_sigma)], p=blur_p)
    return v2.Compose(
        [
            *_crop_ops(size, crop_scale, flip_p),
            v2.ToDtype(torch.float32, scale=True),  # [0, 1]: the colour ops below are faster on float
            v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=jitter_p),
            v2.RandomGrayscale(p=grey_p),
            FlushDenormals(blur),
            v2.RandomSolarize(threshold=0.5, p=solarize_p),  # half of the [0, 1] range
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def build_crop_transform(
    size: int, crop_scale: tuple[float, float] = (0.2, 1.0), flip_p: float = 0.5
) -> ImageTransform:
    """The first half of a BYOL view: PIL image -> (3, size, size) uint8 random resized crop, maybe flipped.

    With `aug.on_device` the loader stops here and frafer.data.pipelines.batch_augment does the colour half on the
    batch.
    """
    return v2.Compose(_crop_ops(size, crop_scale, flip_p))


def _crop_ops(size: int, crop_scale: tuple[float, float], flip_p: float) -> list:
    _check_size(size)
    return [
        v2.PILToTensor(),  # (3, H, W) uint8; tensors pass through unchanged
        v2.RandomResizedCrop(size, scale=crop_scale, antialias=True),  # (3, size, size) uint8
        v2.RandomHorizontalFlip(p=flip_p),
    ]


class TwoViewTransform:
    """The two asymmetric BYOL views of one image: view 1 always blurred and never solarised,
    view 2 rarely blurred and sometimes solarised (blur_p and solarize_p give (view 1, view 2)).

    crops_only=True returns the two uint8 crops without their colour half (`aug.on_device`).
    """

    def __init__(
        self,
        size: int,
        blur_p: tuple[float, float] = (1.0, 0.1),
        solarize_p: tuple[float, float] = (0.0, 0.2),
        crops_only: bool = False,
        **shared,
    ):
        """`shared`: the other keywords of build_view_transform (crop_scale, jitter, …), the same for both views."""
        shared["size"] = size
        if crops_only:
            crop = build_crop_transform(size, shared.get("crop_scale", (0.2, 1.0)), shared.get("flip_p", 0.5))
            self.views = (crop, crop)
            return
        self.views = tuple(
            build_view_transform(blur_p=blur, solarize_p=solarize, **shared)
            for blur, solarize in zip(blur_p, solarize_p, strict=True)
        )

    def __call__(self, img: Image.Image | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views, each (3, size, size) float32."""
        if isinstance(img, Image.Image):
            img = v2.functional.pil_to_tensor(img)  # once for both views, (3, H, W) uint8
        first, second = self.views
        return first(img), second(img)

    def __repr__(self) -> str:
        return f"TwoViewTransform(\n  view1={self.views[0]},\n  view2={self.views[1]})"


def build_eval_transform(
    size: int, mean: Sequence[float] = VGGFACE2_MEAN, std: Sequence[float] = VGGFACE2_STD
) -> ImageTransform:
    """Deterministic eval transform: PIL image -> resize to (size, size) -> float -> normalise."""
    _check_size(size)
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def build_fer_train_transform(
    size: int,
    flip_p: float = 0.5,
    jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.0),
    translate: float = 0.1,
    rotate: float = 10.0,
    erase_p: float = 0.25,
    erase_scale: Sequence[float] = (0.02, 0.25),
    mean: Sequence[float] = VGGFACE2_MEAN,
    std: Sequence[float] = VGGFACE2_STD,
) -> ImageTransform:
    """Fine-tuning augmentation (docs/method.md §4): resize, flip, colour jitter, small shift and rotation, erasing.

    A step whose strength is zero is left out, so with every strength at zero this is exactly the eval transform
    (the linear-probe equivalence test relies on that).
    """
    _check_size(size)
    ops: list = [v2.PILToTensor(), v2.Resize((size, size), antialias=True)]
    if flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(flip_p))
    if any(j > 0 for j in jitter):
        b, c, s, h = jitter
        ops.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    if translate > 0 or rotate > 0:
        ops.append(v2.RandomAffine(degrees=rotate, translate=(translate, translate) if translate > 0 else None))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    if erase_p > 0:
        ops.append(v2.RandomErasing(p=erase_p, scale=tuple(erase_scale), value=0))
    return v2.Compose(ops)


class FlushDenormals(torch.nn.Module):
    """Run a transform with float32 subnormals flushed to zero, then restore the caller's setting.

    Only the speed changes: subnormals are below 1.2e-38, far under anything an image can show.
    """

    def __init__(self, transform: Callable):
        super().__init__()
        self.transform = transform

    def forward(self, *inputs):
        with flushing_denormals():
            return self.transform(*inputs)


@contextmanager
def flushing_denormals() -> Iterator[None]:
    """Flush float32 subnormals to zero in this thread for the duration (a no-op where unsupported)."""
    was_on = _denormals_flushed()
    changed = not was_on and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


def _denormals_flushed() -> bool:
    """Whether this thread flushes subnormals now: torch has no getter, so multiply one and look."""
    return torch.tensor(1e-40, dtype=torch.float32).mul(1.0).item() == 0.0


def _check_size(size: int) -> None:
    """Reject an output size that cannot make an image (it usually comes from a config file)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise FraferError(f"image size must be a positive integer number of pixels, got {size!r}")
