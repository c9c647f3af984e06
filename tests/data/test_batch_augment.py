"""The batched on-device colour augmentation (`aug.on_device`) against torchvision's per-image ops and the CPU path.

Op by op, each batched op with a factor per image must equal torchvision's functional op applied image by image;
drawn as a whole, the views must follow the CPU path's distributions (two-sample Kolmogorov-Smirnov tests on
statistics that each step moves: channel means, contrast, sharpness, greyness), and the same tests must see a
changed probability. In the loop, a run with the switch trains and resumes exactly.
"""

import functools

import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms.v2 import functional as tvf

from frafer.artifacts.checkpoint import latest_checkpoint, load_weights
from frafer.data.pipelines import batch_augment as ba
from frafer.data.pipelines.transforms import VGGFACE2_MEAN, VGGFACE2_STD, TwoViewTransform
from frafer.data.synthetic.renderer import SyntheticFaces
from frafer.train.pretrain import pretrain
from tests.conftest import pretrain_cfg as tiny
from tests.conftest import straight_and_resumed, train_losses


@pytest.fixture
def images() -> torch.Tensor:
    """Six float images in [0, 1] with flat, saturated and dark pixels among the random ones (hue's edge cases)."""
    torch.manual_seed(0)
    x = torch.rand(6, 3, 20, 24)
    x[0, :, :4] = 0.5  # grey: chroma 0
    x[1, :, :4] = 0.0  # black: value 0
    x[2, 0, :4], x[2, 1:, :4] = 1.0, 0.0  # pure red
    x[3, :, :4] = torch.tensor([0.2, 0.9, 0.9]).view(3, 1, 1)  # a tie between green and blue
    return x


def per_image(op, x: torch.Tensor, factors: list[float]) -> torch.Tensor:
    return torch.stack([op(image, f) for image, f in zip(x, factors, strict=True)])


@pytest.mark.parametrize("name, ours, theirs, factors", [
    ("brightness", ba.brightness, tvf.adjust_brightness, [0.6, 1.0, 1.4, 0.0, 0.9, 1.3]),
    ("contrast", ba.contrast, tvf.adjust_contrast, [0.6, 1.0, 1.4, 0.0, 0.9, 1.3]),
    ("saturation", ba.saturation, tvf.adjust_saturation, [0.6, 1.0, 1.4, 0.0, 0.9, 1.3]),
    ("hue", ba.hue, tvf.adjust_hue, [-0.1, 0.0, 0.1, 0.5, -0.5, 0.03]),
])
def test_each_jitter_op_matches_torchvision_image_by_image(images, name, ours, theirs, factors):
    expected = per_image(theirs, images, factors)
    assert torch.allclose(ours(images, torch.tensor(factors)), expected, atol=1e-5), name


def test_blur_greyscale_and_solarize_match_torchvision(images):
    sigmas = [0.1, 0.5, 1.0, 1.5, 2.0, 0.7]
    for kernel in (3, 5):
        pairs = zip(images, sigmas, strict=True)
        expected = torch.stack([tvf.gaussian_blur(im, [kernel, kernel], [s, s]) for im, s in pairs])
        assert torch.allclose(ba.gaussian_blur(images, torch.tensor(sigmas), kernel), expected, atol=1e-6)
    assert torch.allclose(ba.grey(images).repeat(1, 3, 1, 1), tvf.rgb_to_grayscale(images, 3), atol=1e-6)
    assert torch.equal(ba.solarize(images), tvf.solarize(images, 0.5))


def test_the_draws_depend_on_the_step_rank_and_seed_only():
    def draw(seed, rank, step):
        return ba.draw_view(16, ba.step_generator(seed, rank, step), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 1.0,
                            (0.1, 2.0), 0.0)

    a, b = draw(0, 0, 5), draw(0, 0, 5)
    assert torch.equal(a.factors, b.factors) and torch.equal(a.order, b.order)
    for other in (draw(1, 0, 5), draw(0, 1, 5), draw(0, 0, 6)):
        assert not torch.equal(a.factors, other.factors)
    assert all(sorted(row.tolist()) == [0, 1, 2, 3] for row in a.order)
    low, high = a.factors.min(0).values, a.factors.max(0).values
    assert (low >= torch.tensor([0.6, 0.6, 0.8, -0.1])).all() and (high <= torch.tensor([1.4, 1.4, 1.2, 0.1])).all()


SIZE, DRAWS = 32, 400
FACE = SyntheticFaces(1, 48, num_identities=1, seed=3)[0][0]


def view_statistics(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 3, H, W) normalised views -> per-view numbers that jitter, greyscale, blur and solarisation move."""
    pixels = views * torch.tensor(VGGFACE2_STD).view(3, 1, 1) + torch.tensor(VGGFACE2_MEAN).view(3, 1, 1)
    spread = pixels.max(1).values - pixels.min(1).values  # (N, H, W): 0 on a grey pixel
    stats = {f"mean_{c}": pixels[:, i].mean(dim=(1, 2)) for i, c in enumerate("rgb")}
    stats["contrast"] = pixels.std(dim=(1, 2, 3))
    stats["sharpness"] = (pixels[..., 1:] - pixels[..., :-1]).abs().mean(dim=(1, 2, 3))
    stats["colourfulness"] = spread.mean(dim=(1, 2))
    stats["grey"] = (spread.amax(dim=(1, 2)) < 1e-5).float()
    return stats


@functools.cache
def cpu_path_views() -> tuple[torch.Tensor, torch.Tensor]:
    """DRAWS pairs of views of one synthetic face by the CPU path (the same for every test: drawn once)."""
    torch.manual_seed(0)
    cpu = TwoViewTransform(SIZE)
    pairs = [cpu(FACE) for _ in range(DRAWS)]
    return tuple(torch.stack([p[v] for p in pairs]) for v in (0, 1))


def cpu_and_batched_views(colour_settings: dict | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """DRAWS pairs of views of one synthetic face by the CPU path and by the crops + batched colour path."""
    cpu_views = list(cpu_path_views())
    torch.manual_seed(1)
    crops = TwoViewTransform(SIZE, crops_only=True)
    pairs = [crops(FACE) for _ in range(DRAWS)]
    colour = ba.BatchedViewColour(SIZE, seed=1, **(colour_settings or {}))
    batched = colour(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), step=0)
    return cpu_views, list(batched)


def rejected(cpu_views, batched_views, alpha: float = 1e-3) -> list[str]:
    out = []
    for view, (a, b) in enumerate(zip(cpu_views, batched_views, strict=True), start=1):
        sa, sb = view_statistics(a), view_statistics(b)
        out += [f"view {view} {k}" for k in sa if ks_2samp(sa[k].numpy(), sb[k].numpy()).pvalue < alpha]
    return out


def test_the_batched_views_follow_the_cpu_paths_distributions():
    cpu_views, batched_views = cpu_and_batched_views()
    assert all(v.dtype == torch.float32 and v.shape == (DRAWS, 3, SIZE, SIZE) for v in batched_views)
    assert rejected(cpu_views, batched_views) == []
    for views in (cpu_views, batched_views):  # about 20 % greyscale (grey_p 0.2) in each view of each path
        assert all(0.14 < view_statistics(v)["grey"].mean() < 0.26 for v in views)


@pytest.mark.parametrize("changed", [{"blur_p": (0.1, 1.0)}, {"jitter_p": 0.3}, {"grey_p": 0.5}])
def test_the_distribution_test_sees_a_changed_probability(changed):
    cpu_views, batched_views = cpu_and_batched_views(changed)
    assert rejected(cpu_views, batched_views) != []


def test_on_device_augmentation_takes_uint8_crops_only():
    colour = ba.BatchedViewColour(SIZE)
    with pytest.raises(TypeError, match="uint8"):
        colour(torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE), step=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_figures.sh runs it)")
def test_the_same_draws_give_the_same_views_on_cuda():
    crops = (torch.rand(16, 3, SIZE, SIZE) * 255).to(torch.uint8)
    draws = ba.draw_view(16, ba.step_generator(0, 0, 0), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 0.5, (0.1, 2.0), 0.5)
    args = ((0.4, 0.4, 0.2, 0.1), 5, VGGFACE2_MEAN, VGGFACE2_STD)
    on_cpu, on_cuda = ba.apply_view(crops, draws, *args), ba.apply_view(crops.cuda(), draws, *args)
    assert torch.allclose(on_cuda.cpu(), on_cpu, atol=1e-4)


def test_a_run_with_on_device_augmentation_trains_and_resumes_exactly(faces, tmp_path):
    result = pretrain(tiny(faces, "train.steps=3", "aug.on_device=true"), tmp_path / "run")
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert result.step == 3
    a, b = straight_and_resumed(faces, tmp_path / "resume", "aug.on_device=true")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    plain = load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors")
    assert set(plain) == set(a)
