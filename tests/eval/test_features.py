"""The one frozen-network pass: item order, unreadable files, eval mode and back, flip averaging, bad networks."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from frafer.data.readers.images import load_rgb
from frafer.errors import FraferError
from frafer.eval.features import frozen_pass, pooled_trunk
from frafer.models.backbones import build_trunk


def _images(tmp_path, n=5):
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (40 * i, 10, 200 - 30 * i)).save(path)
        paths.append(path)
    return paths


def _to_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255  # (3, 8, 8)


def test_outputs_come_in_item_order_with_unreadable_rows_masked(tmp_path):
    paths = _images(tmp_path)
    (tmp_path / "2.png").write_bytes(b"not an image")
    mean_colour = lambda x: x.mean(dim=(2, 3))  # noqa: E731  (B, 3)
    out = frozen_pass(mean_colour, paths, load_rgb, _to_tensor, batch_size=2)
    assert out.readable.tolist() == [True, True, False, True, True] and out.unreadable == 1
    for i in (0, 1, 3, 4):
        assert torch.allclose(out.values[i], _to_tensor(load_rgb(paths[i])).mean(dim=(1, 2)))
    assert torch.equal(out.values[2], torch.zeros(3))


def test_modules_run_in_eval_mode_and_get_their_mode_back(tmp_path):
    trunk = build_trunk("resnet18", width=4, remove_maxpool=True).train()
    seen = []

    def network(x):
        seen.append(trunk.training)
        return pooled_trunk(trunk)(x)

    frozen_pass(network, _images(tmp_path, 3), load_rgb, _to_tensor, modules=[trunk])
    assert seen == [False] and trunk.training


def test_flip_average_is_the_mean_over_the_mirror_image(tmp_path):
    paths = _images(tmp_path, 2)
    left_column = lambda x: x[:, :, :, 0].mean(dim=2)  # noqa: E731
    plain = frozen_pass(left_column, paths, load_rgb, _to_tensor)
    flipped = frozen_pass(lambda x: left_column(x.flip(3)), paths, load_rgb, _to_tensor)
    both = frozen_pass(left_column, paths, load_rgb, _to_tensor, flip_average=True)
    assert torch.allclose(both.values, (plain.values + flipped.values) / 2)


def test_a_network_that_does_not_return_one_row_per_image_is_named(tmp_path):
    with pytest.raises(FraferError, match=r"must return a \(B, D\) tensor for a batch of B=3, got \(3, 3, 8, 8\)"):
        frozen_pass(nn.Identity(), _images(tmp_path, 3), load_rgb, _to_tensor)
