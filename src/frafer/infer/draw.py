"""Pictures of predictions: boxes and labels on the image, and per face a panel of where the model looked.

A face's panel has the classifier's Grad-CAM row (every bundle) and, for bundles fine-tuned from FRA, the region
row, whose title says whether the regions formed or are flat (`region_sharpness`).

Text and lines scale with the image (about 2.5 % of its shorter side), so labels stay legible on a 100 px crop
and on a 24 MP photo alike.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

_PALETTE = (np.asarray(colormaps["tab10"].colors) * 255).astype(np.uint8)  # one colour per region / class


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def annotate(rgb: np.ndarray, faces, classes) -> Image.Image:
    """The image with each face's box, landmarks and "label 0.93" drawn on it."""
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    unit = max(1, round(min(image.size) * 0.025))
    font = _font(2 * unit)
    for face in faces:
        colour = tuple(int(c) for c in _PALETTE[list(classes).index(face.label) % len(_PALETTE)])
        x1, y1, x2, y2 = face.box
        line = max(1, unit // 3)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        if face.landmarks is not None:
            for x, y in face.landmarks:
                draw.ellipse([x - line, y - line, x + line, y + line], fill=colour)
        text = f"{face.label} {face.confidence:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 2 * line if y1 - th - 2 * line >= 0 else y2 + line  # above the box, else below it
        draw.rectangle([x1, ty, x1 + tw + 2 * line, ty + th + 2 * line], fill=colour)
        draw.text((x1 + line - left, ty + line - top), text, fill=(0, 0, 0) if sum(colour) > 382 else (255, 255, 255),
                  font=font)
    return image


def upsample_maps(heatmaps: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) → (N, size, size), bilinear."""
    maps = [np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
            for m in heatmaps]
    return np.stack(maps)


def region_overlays(crop: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.55) -> list[np.ndarray]:
    """Each region's map coloured on one absolute scale (0 blue … 1 red: the probability that the pixel belongs to
    the region) and laid over the crop: N × (S, S, 3) uint8. Regions that own nothing stay blue, where a per-map
    rescaling would paint a uniform map red everywhere."""
    size = crop.shape[0]
    maps = upsample_maps(heatmaps, size)
    jet = colormaps["jet"]
    out = []
    for m in maps:
        colour = jet(np.clip(m, 0, 1))[..., :3] * 255
        out.append((crop * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8))
    return out


def argmax_map(crop: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The region with the largest heatmap at each pixel, one colour per region, over the crop."""
    maps = upsample_maps(heatmaps, crop.shape[0])
    colour = _PALETTE[maps.argmax(axis=0) % len(_PALETTE)].astype(np.float32)
    return (crop * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)


def heatmap_panel(crop: np.ndarray, heatmaps: np.ndarray, title: str = "", scale: int = 2) -> Image.Image:
    """One face: [crop | region 1 … region N | argmax regions], with `title` above, `scale`× enlarged."""
    tiles = [crop, *region_overlays(crop, heatmaps), argmax_map(crop, heatmaps)]
    row = np.concatenate(tiles, axis=1)
    image = Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST)
    if not title:
        return image
    font = _font(max(10, crop.shape[0] * scale // 8))
    band = font.size + 6
    canvas = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    canvas.paste(image, (0, band))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(0, 0, 0), font=font)
    return canvas


def panel_grid(panels: list[Image.Image]) -> Image.Image:
    """Panels stacked top to bottom (one row per face), white between them."""
    width = max(p.width for p in panels)
    grid = Image.new("RGB", (width, sum(p.height + 4 for p in panels)), (255, 255, 255))
    y = 0
    for p in panels:
        grid.paste(p, (0, y))
        y += p.height + 4
    return grid


FORMED_SHARPNESS = 1.25  # regions count as formed when the mean largest probability is 1.25× uniform's 1/N or more


def region_sharpness(heatmaps: np.ndarray) -> float:
    """Mean over pixels of the largest region probability: 1/N for flat maps, 1 for hard regions. (N, h, w)."""
    return float(np.asarray(heatmaps).max(axis=0).mean())


def regions_formed(heatmaps: np.ndarray) -> bool:
    return region_sharpness(heatmaps) >= FORMED_SHARPNESS / len(heatmaps)


def cam_overlay(crop: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A Grad-CAM map (h, w) in [0, 1], upsampled, coloured (0 blue … 1 red) and laid over the crop: (S, S, 3)."""
    m = upsample_maps(cam[None], crop.shape[0])[0]
    colour = colormaps["jet"](np.clip(m, 0, 1))[..., :3] * 255
    return (crop * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)


def _titled(image: Image.Image, title: str, height: int) -> Image.Image:
    font = _font(max(10, height // 8))
    band = font.size + 6
    canvas = Image.new("RGB", (max(image.width, int(font.getlength(title)) + 8), image.height + band),
                       (255, 255, 255))
    canvas.paste(image, (0, band))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(0, 0, 0), font=font)
    return canvas


def face_panel(face, cam_layer: str = "", heatmap_trunk: str | None = None, scale: int = 0) -> Image.Image:
    """One face's panel: [crop | Grad-CAM] titled with the label, and below it the FRA region row when the face
    has region heatmaps, titled 'formed' or 'flat' with its sharpness. `scale` 0 = enlarge to about 192 px."""
    crop = face.crop
    scale = scale or max(2, 192 // crop.shape[0])
    rows = []
    if face.cam is not None:
        row = np.concatenate([crop, cam_overlay(crop, face.cam)], axis=1)
        image = Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST)
        rows.append(_titled(image, f"face {face.index}: {face.label} {face.confidence:.2f}, Grad-CAM ({cam_layer})",
                            crop.shape[0] * scale))
    if face.heatmaps is not None:
        n, sharp = len(face.heatmaps), region_sharpness(face.heatmaps)
        state = "formed" if regions_formed(face.heatmaps) else "flat"
        title = (f"FRA regions ({heatmap_trunk} trunk): {state}, mean largest probability {sharp:.3f} "
                 f"(uniform {1 / n:.3f})")
        rows.append(_titled(heatmap_panel(crop, face.heatmaps, scale=scale), title, crop.shape[0] * scale))
    if not rows:
        raise ValueError("face_panel needs a face with a Grad-CAM map or region heatmaps")
    return panel_grid(rows)
