"""Tests for image loading, folder and VGGFace2 listing, the BYOL transforms and the SSL dataset.

All images are tiny (16-64 px) and written into tmp_path.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from frafer.data.pipelines.ssl_dataset import SkipReport, UnlabelledImages, collate_two_views
from frafer.data.pipelines.transforms import (
    VGGFACE2_MEAN,
    VGGFACE2_STD,
    TwoViewTransform,
    blur_kernel_size,
    build_eval_transform,
    build_view_transform,
)
from frafer.data.readers.folders import list_images
from frafer.data.readers.images import IMAGE_EXTENSIONS, UnreadableImage, load_rgb
from frafer.data.readers.vggface2 import enlarge_box, list_vggface2, read_loose_boxes
from frafer.errors import FraferError

# ----------------------------------------------------------------------------- fixtures


def noise_image(size: tuple[int, int] = (48, 40), seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random image of `size` (width, height); noise so that JPEGs are not trivially small."""
    rng = np.random.default_rng(seed)
    bands = len(mode)
    pixels = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels, mode)


def truncated_jpeg(path: Path) -> Path:
    """A valid JPEG cut in half."""
    noise_image((64, 64), seed=7).save(path, "JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_width_png(path: Path) -> Path:
    """A PNG whose header says 0 x 8 pixels (Pillow refuses to open it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 0, 8, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A small mixed tree: good images in four formats and odd modes, broken files, ignored files."""
    root = tmp_path / "faces"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "bad").mkdir()
    noise_image(seed=1).save(root / "a.jpg")
    noise_image(seed=2).save(root / "B.PNG")
    noise_image(seed=3).save(root / "sub" / "c.webp")
    noise_image(seed=4).save(root / "sub" / "d.bmp")
    Image.new("L", (32, 32), 90).save(root / "grey.png")
    Image.new("RGBA", (32, 32), (200, 100, 50, 128)).save(root / "rgba.png")
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(root / "pal.png")
    noise_image(seed=5).save(root / ".hidden" / "e.jpg")
    noise_image(seed=6).save(root / ".dotfile.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "bad" / "x.jpg").write_bytes(b"")
    (root / "bad" / "y.png").write_text("just some text, renamed")
    truncated_jpeg(root / "bad" / "z.jpg")
    return root


def rel(paths: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in paths]


# ----------------------------------------------------------------------------- list_images


def test_list_images_is_sorted_recursive_and_filtered(image_tree: Path) -> None:
    found = rel(list_images(image_tree), image_tree)
    assert found == [
        "B.PNG", "a.jpg", "bad/x.jpg", "bad/y.png", "bad/z.jpg", "grey.png", "pal.png", "rgba.png",
        "sub/c.webp", "sub/d.bmp",
    ]  # fmt: skip
    assert list_images(str(image_tree)) == list_images(image_tree)  # deterministic, str accepted


def test_list_images_errors_name_the_root(tmp_path: Path) -> None:
    with pytest.raises(FraferError, match=r"data root .*nowhere does not exist"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FraferError, match=r"empty contains no images.*\.jpg, \.jpeg, \.png, \.webp, \.bmp"):
        list_images(tmp_path / "empty")
    assert list_images(tmp_path / "empty", allow_empty=True) == []
    (tmp_path / "file.jpg").write_bytes(b"")
    with pytest.raises(FraferError, match=r"file\.jpg is a file, expected a folder of images \(\.jpg"):
        list_images(tmp_path / "file.jpg")
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".webp", ".bmp")


# ----------------------------------------------------------------------------- load_rgb


@pytest.mark.parametrize("name", ["a.jpg", "B.PNG", "sub/c.webp", "sub/d.bmp"])
def test_load_rgb_reads_every_format(image_tree: Path, name: str) -> None:
    image = load_rgb(image_tree / name)
    assert image.mode == "RGB" and image.size == (48, 40)


def test_load_rgb_converts_modes_to_rgb(image_tree: Path, tmp_path: Path) -> None:
    assert load_rgb(image_tree / "grey.png").getpixel((3, 3)) == (90, 90, 90)
    assert load_rgb(image_tree / "pal.png").getpixel((3, 3)) == (10, 20, 30)
    # RGBA is composited on black: half-transparent (200, 100, 50) becomes about half as bright.
    assert load_rgb(image_tree / "rgba.png").getpixel((3, 3)) == pytest.approx((100, 50, 25), abs=1)
    Image.new("LA", (8, 8), (80, 0)).save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png").getpixel((0, 0)) == (0, 0, 0)  # fully transparent grey
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert load_rgb(tmp_path / "cmyk.jpg").getpixel((0, 0)) == pytest.approx((255, 255, 255), abs=2)
    deep = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 16-bit grey: scaled, not clipped
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert [load_rgb(tmp_path / "deep.png").getpixel((x, 0)) for x in range(3)] == [
        (0, 0, 0), (128, 128, 128), (255, 255, 255),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad/x.jpg", "empty file"),
        ("bad/y.png", "not a readable image"),
        ("bad/z.jpg", "truncated"),
        ("bad/missing.jpg", "file not found"),
    ],
)
def test_load_rgb_failures_name_path_and_reason(image_tree: Path, name: str, reason: str) -> None:
    with pytest.raises(UnreadableImage) as caught:
        load_rgb(image_tree / name)
    assert caught.value.path == str(image_tree / name)
    assert reason in caught.value.reason
    assert not isinstance(caught.value, FraferError)


def test_load_rgb_rejects_zero_size_header(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="zero-size"):
        load_rgb(zero_width_png(tmp_path / "zero.png"))


def test_truncated_file_fails_even_if_pillow_is_told_to_accept_it(image_tree: Path, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(UnreadableImage, match="truncated"):
        load_rgb(image_tree / "bad" / "z.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_load_rgb_crops_and_clips_the_box(image_tree: Path) -> None:
    full = load_rgb(image_tree / "a.jpg")  # 48 x 40
    crop = load_rgb(image_tree / "a.jpg", box=(10, 5, 20, 15))
    assert crop.size == (20, 15)
    assert crop.getpixel((0, 0)) == full.getpixel((10, 5))
    assert load_rgb(image_tree / "a.jpg", box=(-10, 30, 30, 30)).size == (20, 10)  # clipped
    with pytest.raises(UnreadableImage, match="outside the 48x40 image"):
        load_rgb(image_tree / "a.jpg", box=(60, 0, 10, 10))
    with pytest.raises(UnreadableImage, match="degenerate crop box"):
        load_rgb(image_tree / "a.jpg", box=(5, 5, 0, 10))


# ----------------------------------------------------------------------------- VGGFace2


@pytest.fixture
def vggface2(tmp_path: Path) -> tuple[Path, Path]:
    """root/n00000{1,2}/ with three 64 x 48 images and a loose box CSV missing one of them."""
    root = tmp_path / "vggface2" / "train"
    for identity, image in [("n000001", "0001_01"), ("n000001", "0002_01"), ("n000002", "0001_01")]:
        (root / identity).mkdir(parents=True, exist_ok=True)
        noise_image((64, 48)).save(root / identity / f"{image}.jpg")
    noise_image((64, 48)).save(root / "stray.jpg")  # not in an identity folder: ignored
    csv_path = tmp_path / "vggface2" / "bb_landmark" / "loose_bb_train.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text('NAME_ID,X,Y,W,H\n"n000001/0001_01",10,8,20,16\nn000002/0001_01,50,40,20,20\n')
    return root, csv_path


def test_read_loose_boxes(vggface2: tuple[Path, Path]) -> None:
    _root, csv_path = vggface2
    assert read_loose_boxes(csv_path) == {
        "n000001/0001_01": (10, 8, 20, 16),
        "n000002/0001_01": (50, 40, 20, 20),
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("NAME,X,Y,W,H\n", "line 1: expected the header NAME_ID,X,Y,W,H"),
        ('NAME_ID,X,Y,W,H\n"n1/a",1,2,3,4\n"n1/b",1,2,three,4\n', "line 3: X,Y,W,H must be integers"),
        ('NAME_ID,X,Y,W,H\n"n1/a",1,2,3\n', "line 2: expected 5 fields"),
        (
            'NAME_ID,X,Y,W,H\n"n1/a",1,2,3,4\n"n1/a",1,2,3,4\n',
            "line 3: NAME_ID 'n1/a' already listed on line 2",
        ),
    ],
)
def test_read_loose_boxes_reports_the_bad_line(tmp_path: Path, text: str, match: str) -> None:
    csv_path = tmp_path / "loose_bb_train.csv"
    csv_path.write_text(text)
    with pytest.raises(FraferError, match=match):
        read_loose_boxes(csv_path)
    with pytest.raises(FraferError, match="missing.csv does not exist"):
        read_loose_boxes(tmp_path / "missing.csv")


def test_list_vggface2_boxes_margin_and_missing_count(vggface2: tuple[Path, Path]) -> None:
    root, csv_path = vggface2
    plain = list_vggface2(root)
    assert rel([path for path, _ in plain.items], root) == [
        "n000001/0001_01.jpg", "n000001/0002_01.jpg", "n000002/0001_01.jpg",
    ]  # fmt: skip
    assert plain.identities == ("n000001", "n000002")
    assert all(box is None for _, box in plain.items) and plain.missing_boxes == 0

    index = list_vggface2(root, bbox_csv=csv_path, crop_margin=0.25)
    boxes = [box for _, box in index.items]
    assert boxes == [(5, 4, 30, 24), None, (45, 35, 30, 30)]
    assert index.missing_boxes == 1
    sizes = [load_rgb(path, box).size for path, box in index.items]
    assert sizes == [(30, 24), (64, 48), (19, 13)]  # the last box runs past the 64 x 48 image
    assert [load_rgb(p, b).size for p, b in list_vggface2(root, csv_path).items][0] == (20, 16)
    assert enlarge_box((10, 10, 100, 50), 0.1) == (0, 5, 120, 60)
    with pytest.raises(FraferError, match="crop_margin must be >= 0"):
        list_vggface2(root, csv_path, crop_margin=-0.1)


# ----------------------------------------------------------------------------- transforms


def constant_image(value: tuple[int, int, int], size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), value)


def only(**kwargs) -> dict:
    """build_view_transform arguments with every augmentation off except those given."""
    off = dict(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grey_p=0.0, blur_p=0.0, solarize_p=0.0,
               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # fmt: skip
    return off | kwargs


def test_blur_kernel_size_is_odd_and_about_a_tenth() -> None:
    assert [blur_kernel_size(size) for size in (16, 32, 64, 112, 224)] == [3, 3, 7, 11, 23]


def test_two_view_transform_shapes_normalisation_and_difference() -> None:
    image = noise_image((80, 72))
    view1, view2 = TwoViewTransform(32)(image)
    assert view1.shape == view2.shape == (3, 32, 32)
    assert view1.dtype == view2.dtype == torch.float32
    assert not torch.equal(view1, view2)
    assert view1.min() < 0 < view1.max()  # normalised, not in [0, 1]


def test_eval_transform_resizes_and_normalises() -> None:
    out = build_eval_transform(24)(constant_image((255, 0, 128), size=50))
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), VGGFACE2_MEAN, VGGFACE2_STD, strict=True)]
    assert out.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-5)


def test_transforms_are_reproducible_from_the_torch_seed() -> None:
    image = noise_image((64, 64))
    transform = TwoViewTransform(32)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    second = transform(image)
    torch.manual_seed(1)
    third = transform(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], third[0])


def test_solarize_inverts_the_upper_half() -> None:
    pixels = np.array([[[0, 127, 128], [200, 255, 64]]], dtype=np.uint8)  # (1, 2, 3) HWC
    image = Image.fromarray(np.repeat(np.repeat(pixels, 8, axis=0), 4, axis=1))  # 8 x 8
    out = build_view_transform(8, **only(solarize_p=1.0))(image)
    expected = torch.tensor([[0, 127, 127], [55, 0, 64]], dtype=torch.float32) / 255  # 255 - x for x >= 128
    assert out[:, 0, 0].tolist() == pytest.approx(expected[0].tolist(), abs=1e-6)
    assert out[:, 0, 7].tolist() == pytest.approx(expected[1].tolist(), abs=1e-6)


def test_greyscale_and_identity_settings() -> None:
    image = constant_image((200, 100, 50), size=8)
    same = build_view_transform(8, **only())(image)
    assert same[:, 0, 0].tolist() == pytest.approx([200 / 255, 100 / 255, 50 / 255], abs=1e-6)
    grey = build_view_transform(8, **only(grey_p=1.0))(image)
    luma = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert grey[:, 0, 0].tolist() == pytest.approx([luma] * 3, abs=1 / 255)


def test_bad_size_is_a_user_error() -> None:
    with pytest.raises(FraferError, match="image size must be a positive integer"):
        build_view_transform(0)


# ----------------------------------------------------------------------------- UnlabelledImages


@pytest.fixture
def dataset(image_tree: Path) -> UnlabelledImages:
    """10 files of which bad/x.jpg, bad/y.png and bad/z.jpg (indices 2, 3, 4) are unreadable."""
    return UnlabelledImages(list_images(image_tree), TwoViewTransform(16))


def test_dataset_skips_bad_files_and_reports_them(dataset: UnlabelledImages, image_tree: Path) -> None:
    view1, view2, skipped = dataset[(2, 123)]
    assert view1.shape == view2.shape == (3, 16, 16)
    bad = [str(image_tree / "bad" / name) for name in ("x.jpg", "y.png", "z.jpg")]
    assert skipped == tuple(bad)  # index 2, 3, 4 unreadable: served index 5 instead
    assert dataset[(5, 123)][2] == ()

    loader = DataLoader(
        dataset, batch_size=5, sampler=[(i, i) for i in range(10)], collate_fn=collate_two_views
    )
    report = SkipReport()
    sizes = []
    for batch1, batch2, paths in loader:
        sizes.append((batch1.shape[0], batch2.shape[0]))
        report.add(paths)
    assert sizes == [(5, 5), (5, 5)]  # batch size kept
    assert report.count == 3 and report.first(2) == bad[:2]
    assert report.summary() == f"skipped 3 unreadable files this epoch: {', '.join(bad)}"
    report.reset()
    assert report.count == 0 and report.summary() is None


def test_dataset_samples_are_keyed_by_seed_and_leave_the_rng_alone(dataset: UnlabelledImages) -> None:
    torch.manual_seed(42)
    state = torch.get_rng_state()
    a, b = dataset[(0, 7)], dataset[(0, 7)]
    c = dataset[(0, 8)]
    assert torch.equal(torch.get_rng_state(), state)  # dropout etc. in the caller are unaffected
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(dataset[1][0], dataset[(1, 1)][0])  # a plain index is its own seed
    with pytest.raises(IndexError):
        dataset[(10, 0)]


def test_dataset_raises_when_everything_is_corrupt(image_tree: Path) -> None:
    bad = [image_tree / "bad" / name for name in ("x.jpg", "y.png", "z.jpg")] * 3
    with pytest.raises(FraferError, match=r"looks broken: 4 unreadable files in a row .*x\.jpg \(empty file"):
        UnlabelledImages(bad, TwoViewTransform(16), max_consecutive_failures=4)[(0, 0)]
    with pytest.raises(FraferError, match="looks broken: 3 unreadable"):
        UnlabelledImages(bad[:3], TwoViewTransform(16))[(1, 0)]  # fewer files than the limit
    with pytest.raises(FraferError, match="empty"):
        UnlabelledImages([], TwoViewTransform(16))


def test_dataset_takes_boxes_and_in_memory_images(vggface2: tuple[Path, Path]) -> None:
    root, csv_path = vggface2
    boxed = UnlabelledImages(list_vggface2(root, csv_path).items, build_eval_pair(8))
    assert boxed[0][0].shape == (3, 8, 8)
    faces = [(noise_image((20, 20), seed=i), i % 3) for i in range(4)] + [(Image.new("L", (20, 20), 9), 0)]
    memory = UnlabelledImages.from_source(faces, TwoViewTransform(16))
    assert len(memory) == 5
    view1, view2, skipped = memory[(4, 0)]
    assert view1.shape == (3, 16, 16) and skipped == ()


def build_eval_pair(size: int):
    """A deterministic 'two view' transform, for checking what was loaded."""
    evaluate = build_eval_transform(size)
    return lambda image: (evaluate(image), evaluate(image))


def test_worker_processes_give_the_same_samples(dataset: UnlabelledImages) -> None:
    keys = [(i % 10, 1000 + i) for i in range(12)]  # includes the bad indices 2-4

    def load(workers: int) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        loader = DataLoader(
            dataset, batch_size=4, sampler=keys, num_workers=workers, collate_fn=collate_two_views
        )
        return list(loader)

    torch.manual_seed(0)
    in_process, in_workers = load(0), load(2)
    assert len(in_process) == len(in_workers) == 3
    for (a1, a2, a_paths), (b1, b2, b_paths) in zip(in_process, in_workers, strict=True):
        assert torch.equal(a1, b1) and torch.equal(a2, b2) and a_paths == b_paths
