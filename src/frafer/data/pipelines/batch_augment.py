"""The colour half of the BYOL views as batched tensor ops on the training device (`aug.on_device`).

Decoding, the random resized crop and the flip stay in the loader workers (uint8, cheap); colour jitter (the four
adjustments in a random order per image), greyscale, Gaussian blur, solarisation and normalisation run here on a
whole (B, 3, H, W) uint8 batch at once, which is what a GPU needs when the CPU cores cannot decode and augment fast
enough (benchmarks/data_pipeline.py prints both rates).

Each op computes what torchvision's functional op of the same name computes on one image, with a factor per image
(tests/data/test_batch_augment.py holds them to 1e-5), and the random draws follow the distributions of
`frafer.data.pipelines.transforms.build_view_transform`: same probabilities, ranges and order, not the same numbers.
The draws are made on the CPU from a generator seeded by (seed, rank, step), so a batch's augmentation depends on
nothing but its step (exact resume) and the global RNG that dropout uses is left alone; which images take which op
is decided on the host, so the device never waits on a mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from frafer.data.pipelines.transforms import VGGFACE2_MEAN, VGGFACE2_STD, blur_kernel_size

# torchvision's rgb_to_grayscale weights (ITU-R 601 luma), used by its contrast, saturation and greyscale ops.
LUMA = (0.2989, 0.587, 0.114)


# ------------------------------------------------------------------------------------------ batched ops


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    """(B,) factors -> (B, 1, 1, 1), to broadcast over an image batch."""
    return factor.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]; `other` broadcasts against x."""
    f = _per_image(factor)
    return (x * f + other * (1 - f)).clamp_(0, 1)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(factor)).clamp_(0, 1)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend towards each image's mean luma."""
    return _blend(x, grey(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend towards each image's own luma image."""
    return _blend(x, grey(x), factor)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of image i by shift[i] turns (shift in [-0.5, 0.5])."""
    value, _ = x.max(dim=1)  # (B, H, W)
    chroma = value - x.min(dim=1).values
    r, g, b = x.unbind(1)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    # Hue in sixths of a turn, from whichever channel is the maximum (red first, as PIL and torchvision break ties).
    sixths = torch.where(
        value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    sixths = torch.where(chroma > 0, sixths, torch.zeros_like(sixths))
    h = (sixths / 6 + shift.view(-1, 1, 1)) % 1.0
    s = chroma / torch.where(value > 0, value, torch.ones_like(value))
    # HSV -> RGB: channel n (red 5, green 3, blue 1) is v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6 * h.unsqueeze(1)) % 6
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    v = value.unsqueeze(1)
    return (v - v * s.unsqueeze(1) * ramp).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur of image i with sigma[i], reflect-padded: (B, 3, H, W) -> same."""
    batch, channels, height, width = x.shape
    offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - (kernel_size - 1) / 2
    kernels = torch.softmax(-(offsets**2) / (2 * sigma.to(x).view(-1, 1) ** 2), dim=1)  # (B, K), rows sum to 1
    kernels = kernels.repeat_interleave(channels, dim=0)  # one per (image, channel) plane
    pad = kernel_size // 2
    planes = torch.nn.functional.pad(x.reshape(1, batch * channels, height, width), (pad, pad, pad, pad),
                                     mode="reflect")
    planes = torch.nn.functional.conv2d(planes, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    planes = torch.nn.functional.conv2d(planes, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return planes.view(batch, channels, height, width)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """x -> 1 - x where x >= 0.5 (torchvision's RandomSolarize at threshold 0.5)."""
    return torch.where(x >= 0.5, 1 - x, x)


JITTER_OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (brightness, contrast, saturation, hue)


# ------------------------------------------------------------------------------------------ draws


@dataclass
class ViewDraws:
    """The random choices for one view of a batch of B images, on the CPU.

    jitter: (B,) bool, order: (B, 4) long (a permutation of brightness, contrast, saturation, hue per image),
    factors: (B, 4) float (the four jitter factors), grey: (B,) bool, blur: (B,) bool, sigma: (B,) float,
    solarize: (B,) bool.
    """

    jitter: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    grey: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor


def draw_view(batch: int, generator: torch.Generator, jitter: Sequence[float], jitter_p: float, grey_p: float,
              blur_p: float, blur_sigma: Sequence[float], solarize_p: float) -> ViewDraws:
    """Draw one view's choices with build_view_transform's distributions: each factor uniform in
    [max(0, 1 - s), 1 + s] (hue in [-s, s]), a uniformly random order, each step applied with its probability."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) * (high - low) + low

    def chance(p: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) < p

    b, c, s, h = jitter
    factors = torch.stack([uniform(max(0.0, 1 - b), 1 + b), uniform(max(0.0, 1 - c), 1 + c),
                           uniform(max(0.0, 1 - s), 1 + s), uniform(-h, h)], dim=1)
    order = torch.rand(batch, 4, generator=generator).argsort(dim=1)
    return ViewDraws(jitter=chance(jitter_p), order=order, factors=factors, grey=chance(grey_p),
                     blur=chance(blur_p), sigma=uniform(*blur_sigma), solarize=chance(solarize_p))


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, rank, step): the same batch gets the same draws on a resume."""
    state = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# ------------------------------------------------------------------------------------------ applying them


def _on(x: torch.Tensor, chosen: torch.Tensor, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        per_image: torch.Tensor | None = None) -> torch.Tensor:
    """x with `op(images, values)` applied to the images where the CPU mask `chosen` is true; `values` are those
    images' entries of the CPU tensor `per_image` (a factor, a sigma), moved to x's device with their index."""
    index = chosen.nonzero().flatten()
    if len(index) == 0:
        return x
    values = None if per_image is None else per_image[index].to(x.device, non_blocking=True)
    if len(index) == len(x):
        return op(x, values)
    index_dev = index.to(x.device, non_blocking=True)
    return x.index_copy(0, index_dev, op(x.index_select(0, index_dev), values))


def apply_view(images: torch.Tensor, draws: ViewDraws, jitter: Sequence[float], kernel_size: int,
               mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 crops -> (B, 3, H, W) float32 views, normalised: the ops of build_view_transform after
    its flip, in its order (jitter, greyscale, blur, solarise, normalise)."""
    x = images.float().div_(255)
    for position in range(4):
        for op_index, op in enumerate(JITTER_OPS):
            if jitter[op_index] == 0:  # torchvision leaves out a jitter op of strength zero
                continue
            chosen = draws.jitter & (draws.order[:, position] == op_index)
            x = _on(x, chosen, op, draws.factors[:, op_index])
    x = _on(x, draws.grey, lambda sub, _: grey(sub).repeat(1, 3, 1, 1))
    x = _on(x, draws.blur, lambda sub, sigma: gaussian_blur(sub, sigma, kernel_size), draws.sigma)
    x = _on(x, draws.solarize, lambda sub, _: solarize(sub))
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


class BatchedViewColour:
    """Both views' colour augmentation for a batch: `(crops1, crops2, step) -> (view1, view2)`.

    The per-view probabilities `blur_p` and `solarize_p` are (view 1, view 2), as in TwoViewTransform.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0,
                 jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1), jitter_p: float = 0.8, grey_p: float = 0.2,
                 blur_p: Sequence[float] = (1.0, 0.1), blur_sigma: Sequence[float] = (0.1, 2.0),
                 solarize_p: Sequence[float] = (0.0, 0.2), mean: Sequence[float] = VGGFACE2_MEAN,
                 std: Sequence[float] = VGGFACE2_STD):
        self.kernel_size = blur_kernel_size(size)
        self.seed, self.rank = seed, rank
        self.jitter, self.jitter_p, self.grey_p, self.blur_sigma = tuple(jitter), jitter_p, grey_p, tuple(blur_sigma)
        self.blur_p, self.solarize_p = tuple(blur_p), tuple(solarize_p)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, crops1: torch.Tensor, crops2: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = step_generator(self.seed, self.rank, step)
        views = []
        for crops, blur_p, solarize_p in zip((crops1, crops2), self.blur_p, self.solarize_p, strict=True):
            if crops.dtype != torch.uint8:
                raise TypeError(f"on-device augmentation takes the loader's uint8 crops, got {crops.dtype}")
            draws = draw_view(len(crops), generator, self.jitter, self.jitter_p, self.grey_p, blur_p,
                              self.blur_sigma, solarize_p)
            views.append(apply_view(crops, draws, self.jitter, self.kernel_size, self.mean, self.std))
        return views[0], views[1]
