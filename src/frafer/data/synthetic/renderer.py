"""Procedural synthetic faces with the 7 basic expressions, for the demo and the test suite.

Real face datasets cannot be downloaded here, so frafer trains and tests on cartoon faces drawn with
Pillow. The generator is built so that the task resembles the real one:

* identity (face shape, skin, eyes, nose, mouth, hair, glasses, brows) is a fixed function of an id;
* nuisance (pose, scale, in-plane rotation, fake yaw, lighting, background clutter, noise) changes
  the picture far more than the expression does;
* the expression lives only in small regions (brows, eyes, nose wrinkles, mouth) and its strength is a
  continuous intensity in [0, 1] that scales the deformation away from neutral;
* each image carries 10 simulated FERPlus-style annotator votes that disagree more when it is subtle.

Everything is deterministic: image i of a dataset with seed s comes from its own
``np.random.default_rng`` streams keyed by (s, i); no global random state is touched.

Geometry is written in *face units*: origin at the face centre, y pointing down, the face half-height
is 1. A per-image affine map (centre, scale, rotation) takes face units to pixels; drawing happens at
``_SUPERSAMPLE`` times the output size and is box-downsampled for antialiasing.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from frafer.data.fer.labels import BASIC_EXPRESSIONS, FERPLUS_COLUMNS
from frafer.errors import FraferError
from frafer.files import atomic_write, atomic_write_text

__all__ = [
    "EXPRESSION_TO_FERPLUS",
    "INTENSITY_RANGE",
    "NUM_VOTES",
    "SyntheticFace",
    "SyntheticFaces",
    "face_regions",
    "render_face",
    "simulate_votes",
    "write_synthetic_dataset",
]

MIN_SIZE = 32
NUM_VOTES = 10
# Dataset intensities are uniform on this range. The floor keeps every non-neutral image carrying a
# visible cue, so the true label stays learnable; uniform puts equal mass on subtle and strong
# expressions, which is what makes vote agreement vary across the dataset.
INTENSITY_RANGE = (0.5, 1.0)
# Full-intensity geometry is this many times the reference deformation of _FULL. At 1.0 a mouth or
# brow moved by about a pixel at 64 px: a supervised tiny ResNet fine-tuned from scratch for a
# minute stayed at chance (16 % on 7 classes); at 1.8 it reaches about 70 %, while identity, pose,
# lighting and background still vary more than expression does. The default of every
# ``expression_gain`` argument (and of the config key data.synthetic.expression_gain).
EXPRESSION_GAIN = 1.8
FACE_RADIUS = 0.42  # mean face half-height as a fraction of the image side (0.35 left the mouth ~6 px wide)

_SUPERSAMPLE = 2  # draw at 2x, then box-reduce: cheap antialiasing
_YAW_SHIFT = 0.16  # face units a depth-1 feature moves sideways at full yaw
_IDENTITY_SEED = 0  # datasets share one population: identity k is the same person everywhere

# Basic expression -> its FERPlus vote column.
EXPRESSION_TO_FERPLUS: dict[str, int] = {
    name: FERPLUS_COLUMNS.index(column)
    for name, column in zip(
        BASIC_EXPRESSIONS,
        ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"),
        strict=True,
    )
}

# Stream tags keep the per-image random streams independent: default_rng([seed, tag, index]).
_TAG_LABELS, _TAG_META, _TAG_RENDER = 0, 1, 2

Color = tuple[int, int, int]


# --------------------------------------------------------------------------------------------------
# Public metadata record
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticFace:
    """Metadata of one generated image: who, which expression, how strong, and the annotator votes."""

    index: int
    identity: int
    label: int  # true (generated) class, index into BASIC_EXPRESSIONS
    intensity: float  # in [0, 1]; 0 = neutral geometry, 1 = full expression
    votes: tuple[int, ...]  # NUM_VOTES annotators' counts over FERPLUS_COLUMNS, summing to NUM_VOTES


# --------------------------------------------------------------------------------------------------
# Identity: fixed per id
# --------------------------------------------------------------------------------------------------

_SKIN_TONES = np.array(
    [(255, 226, 200), (240, 196, 158), (222, 170, 128), (196, 134, 94), (150, 96, 62), (96, 62, 42)],
    dtype=np.float64,
)
_HAIR_COLORS: tuple[Color, ...] = (
    (28, 24, 24),
    (62, 40, 26),
    (112, 74, 42),
    (206, 170, 100),
    (150, 64, 32),
    (168, 166, 162),
)
_DYED_HAIR: tuple[Color, ...] = ((60, 90, 170), (190, 80, 140), (70, 140, 110))
_IRIS_COLORS: tuple[Color, ...] = ((74, 46, 28), (36, 28, 24), (64, 104, 150), (78, 112, 72))
_HAIR_STYLES = ("none", "short", "long", "afro", "fringe")
_HAIR_STYLE_P = (0.12, 0.32, 0.24, 0.12, 0.20)


@dataclass(frozen=True)
class _Identity:
    """Everything that makes one person look like themself (face units unless noted)."""

    aspect: float  # face half-width / half-height
    jaw: float  # chin narrowing, 0 = pure ellipse
    skin: Color
    eye_y: float  # eye-line height
    eye_dx: float  # eye centre distance from the midline
    eye_w: float  # eye half-width
    eye_h: float  # neutral upper-lid height
    iris: Color
    brow_gap: float  # brow height above the upper lid
    brow_w: float  # brow thickness
    brow_len: float  # brow half-length, relative to eye_w
    brow_color: Color
    nose_len: float  # eye line to nose tip
    mouth_y: float
    mouth_w: float  # neutral mouth half-width
    lip: Color
    hair_style: str
    hair: Color
    hairline: float  # y of the hairline on the midline
    glasses: bool
    glasses_color: Color
    glasses_round: bool


def _mix(a: Color, b: Color, t: float) -> Color:
    """Linear blend of two RGB colours (t=0 -> a, t=1 -> b)."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _shade(c: Color, f: float) -> Color:
    """Scale a colour's brightness by f (clipped to 0..255)."""
    return tuple(int(min(255, max(0, round(x * f)))) for x in c)  # type: ignore[return-value]


@lru_cache(maxsize=8192)
def _identity(identity: int, identity_seed: int) -> _Identity:
    """Identity attributes, drawn from their own stream so identity k looks the same in every image."""
    r = np.random.default_rng([identity_seed, identity])
    tone = r.uniform(0, len(_SKIN_TONES) - 1)
    lo = int(tone)
    skin_arr = _SKIN_TONES[lo] + (_SKIN_TONES[min(lo + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[lo]) * (
        tone - lo
    )
    skin: Color = tuple(int(v) for v in skin_arr)  # type: ignore[assignment]
    style = _HAIR_STYLES[r.choice(len(_HAIR_STYLES), p=_HAIR_STYLE_P)]
    hair = (
        _DYED_HAIR[r.integers(len(_DYED_HAIR))]
        if r.random() < 0.06
        else _HAIR_COLORS[r.integers(len(_HAIR_COLORS))]
    )
    if style == "fringe":
        hairline = r.uniform(-0.66, -0.58)
    else:
        hairline = r.uniform(-0.84, -0.64)
    eye_y = r.uniform(-0.14, -0.04)
    eye_w = r.uniform(0.14, 0.18)
    nose_len = r.uniform(0.28, 0.40)
    mouth_y = max(r.uniform(0.44, 0.56), eye_y + nose_len + 0.14)
    brow_base = hair if style != "none" and hair not in _DYED_HAIR else _HAIR_COLORS[r.integers(3)]
    return _Identity(
        aspect=r.uniform(0.70, 0.88),
        jaw=r.uniform(0.0, 0.22),
        skin=skin,
        eye_y=eye_y,
        eye_dx=r.uniform(0.29, 0.37),
        eye_w=eye_w,
        eye_h=r.uniform(0.065, 0.09),
        iris=_IRIS_COLORS[r.integers(len(_IRIS_COLORS))],
        brow_gap=r.uniform(0.09, 0.13),
        brow_w=r.uniform(0.04, 0.085),
        brow_len=r.uniform(1.0, 1.3),
        brow_color=_shade(brow_base, 0.8),
        nose_len=nose_len,
        mouth_y=mouth_y,
        mouth_w=r.uniform(0.22, 0.32),
        lip=_shade(_mix(skin, (190, 70, 80), r.uniform(0.35, 0.6)), 0.85),
        hair_style=style,
        hair=hair,
        hairline=hairline,
        glasses=bool(r.random() < 0.25),
        glasses_color=((25, 25, 25), (90, 60, 30), (150, 150, 160))[r.integers(3)],
        glasses_round=bool(r.random() < 0.5),
    )


# --------------------------------------------------------------------------------------------------
# Nuisance: drawn first from the image's rng
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Nuisance:
    """Per-image pose, lighting and background; independent of identity and expression."""

    cx: float  # face centre, output pixels
    cy: float
    radius: float  # face half-height, output pixels
    angle: float  # in-plane rotation, radians
    yaw: float  # -1..1, faked by shifting features sideways
    bg: tuple[Color, Color]  # background gradient end colours
    bg_dir: float  # gradient direction, radians
    clutter: tuple[tuple[str, tuple[float, ...], Color], ...]  # (kind, box in [0,1] units, colour)
    shirt: Color
    light_dir: float  # direction of the brightness gradient, radians
    light_gain: float  # relative brightness change across the image
    contrast: float
    brightness: float  # added after contrast, 0..255 scale
    noise: np.ndarray  # (size, size, 1) float32, pixel noise already scaled


def _sample_nuisance(rng: np.random.Generator, size: int) -> _Nuisance:
    """Draw all nuisance values. Always the first thing render_face takes from its rng."""
    cx, cy = size * (0.5 + rng.uniform(-0.08, 0.08, 2))
    radius = size * FACE_RADIUS * rng.uniform(0.85, 1.15)
    angle = math.radians(rng.uniform(-15.0, 15.0))
    yaw = rng.uniform(-1.0, 1.0)
    bg = (_rand_color(rng), _rand_color(rng))
    bg_dir = rng.uniform(0, 2 * math.pi)
    clutter = []
    for _ in range(int(rng.integers(0, 3))):
        kind = ("ellipse", "rectangle", "triangle", "line")[rng.integers(4)]
        clutter.append((kind, tuple(rng.uniform(-0.1, 1.1, 6).tolist()), _rand_color(rng)))
    shirt = _rand_color(rng)
    light_dir = rng.uniform(0, 2 * math.pi)
    light_gain = rng.uniform(0.0, 0.5)
    contrast = rng.uniform(0.7, 1.25)
    brightness = rng.uniform(-35.0, 35.0)
    noise = rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(rng.uniform(0.0, 6.0))
    return _Nuisance(
        cx,
        cy,
        radius,
        angle,
        yaw,
        bg,
        bg_dir,
        tuple(clutter),
        shirt,
        light_dir,
        light_gain,
        contrast,
        brightness,
        noise,
    )


def _rand_color(rng: np.random.Generator) -> Color:
    """A random RGB colour."""
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Expression: geometry deltas from neutral, scaled by intensity
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Expr:
    """Facial-geometry controls (face units; multipliers are 1 at neutral)."""

    brow_raise: float = 0.0  # whole brow up (+) / down (-)
    brow_inner: float = 0.0  # inner end up (+, sad/fear) or down (-, anger V)
    brow_arch: float = 0.0  # extra lift of the brow middle
    brow_squeeze: float = 0.0  # inner ends pulled towards the midline
    eye_open: float = 1.0  # upper-lid height multiplier (>1 wide, <1 droop)
    eye_lower: float = 1.0  # lower-lid depth multiplier (<1 squint from below)
    lid_slant: float = 0.0  # lowers the inner upper lid (angry glare)
    mouth_w: float = 1.0  # mouth half-width multiplier
    mouth_curve: float = 0.0  # corner lift: + smile, - frown
    mouth_open: float = 0.0  # lip gap at the centre
    mouth_round: float = 1.0  # gap profile exponent: 0.5 round O, 1 lens, 0.2 boxy stretch
    lip_raise: float = 0.0  # one-sided upper-lip raise (disgust)
    lip_press: float = 0.0  # 0..1 thinning of the lips (anger)
    teeth: float = 0.0  # >0.5 shows upper teeth in the gap
    wrinkle: float = 0.0  # 0..1 nose wrinkle / fold darkness (disgust)


_NEUTRAL = _Expr()
# Full-intensity (1.0) geometry of each class; intensity interpolates linearly from _NEUTRAL.
_FULL: dict[str, _Expr] = {
    "neutral": _NEUTRAL,
    "happy": _Expr(
        brow_raise=0.02,
        eye_open=0.85,
        eye_lower=0.3,
        mouth_w=1.2,
        mouth_curve=0.13,
        mouth_open=0.11,
        mouth_round=1.0,
        teeth=1.0,
    ),
    "sad": _Expr(
        brow_inner=0.11, brow_raise=-0.01, eye_open=0.5, eye_lower=0.9, mouth_w=0.9, mouth_curve=-0.11
    ),
    "surprise": _Expr(
        brow_raise=0.14,
        brow_arch=0.05,
        eye_open=1.8,
        eye_lower=1.3,
        mouth_w=0.55,
        mouth_open=0.34,
        mouth_round=0.5,
    ),
    "fear": _Expr(
        brow_raise=0.09,
        brow_inner=0.07,
        brow_squeeze=0.05,
        eye_open=1.7,
        eye_lower=1.2,
        mouth_w=1.3,
        mouth_open=0.14,
        mouth_round=0.2,
        mouth_curve=-0.04,
        teeth=1.0,
    ),
    "disgust": _Expr(
        brow_raise=-0.05,
        brow_inner=-0.03,
        eye_open=0.65,
        eye_lower=0.45,
        mouth_w=0.95,
        mouth_curve=-0.05,
        mouth_open=0.02,
        lip_raise=0.12,
        teeth=1.0,
        wrinkle=1.0,
    ),
    "anger": _Expr(
        brow_raise=-0.06,
        brow_inner=-0.12,
        brow_squeeze=0.06,
        eye_open=1.05,
        eye_lower=0.8,
        lid_slant=0.55,
        mouth_w=0.75,
        mouth_curve=-0.03,
        lip_press=1.0,
    ),
}


_UNIT_FIELDS = ("lip_press", "wrinkle")  # strengths in 0..1
_POSITIVE_FIELDS = ("eye_open", "eye_lower", "mouth_w", "mouth_round")  # multipliers that must stay > 0


def _expression(label: int, intensity: float, gain: float) -> _Expr:
    """Interpolate the class geometry from neutral by intensity × gain."""
    full = _FULL[BASIC_EXPRESSIONS[label]]
    vals = {}
    for f in fields(_Expr):
        a, b = getattr(_NEUTRAL, f.name), getattr(full, f.name)
        value = a + (b - a) * intensity * gain
        if f.name in _UNIT_FIELDS:
            value = min(max(value, 0.0), 1.0)
        elif f.name in _POSITIVE_FIELDS:
            value = max(value, 0.05)
        vals[f.name] = value
    if full.teeth > 0.5:  # teeth are on/off, not blended
        vals["teeth"] = 1.0
    return replace(_NEUTRAL, **vals)


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


class _Pen:
    """Maps face units to (supersampled) canvas pixels and draws polygons and polylines."""

    def __init__(self, draw: ImageDraw.ImageDraw, nz: _Nuisance, scale: float) -> None:
        self.draw = draw
        self.r = nz.radius * scale  # face half-height in canvas pixels
        c, s = math.cos(nz.angle), math.sin(nz.angle)
        self.mat = self.r * np.array([[c, s], [-s, c]])  # row-vector form of rotate-then-scale
        self.offset = np.array([nz.cx * scale, nz.cy * scale])
        self.yaw = nz.yaw

    def pts(self, xy: np.ndarray, depth: float = 0.0) -> list[float]:
        """(N, 2) face-unit points -> flat pixel list; depth scales the fake-yaw sideways shift."""
        shift = self.offset + (self.yaw * depth * _YAW_SHIFT) * self.mat[0]
        return (xy @ self.mat + shift).ravel().tolist()

    def poly(
        self,
        xy: np.ndarray,
        fill: Color,
        depth: float = 0.0,
        outline: Color | None = None,
        width: float = 0.0,
    ) -> None:
        """Filled polygon; optional outline of `width` face units."""
        w = max(1, round(width * self.r)) if outline is not None else 0
        self.draw.polygon(self.pts(xy, depth), fill=fill, outline=outline, width=w)

    def line(self, xy: np.ndarray, fill: Color, width: float, depth: float = 0.0) -> None:
        """Polyline of `width` face units (at least one canvas pixel)."""
        self.draw.line(self.pts(xy, depth), fill=fill, width=max(1, round(width * self.r)), joint="curve")


_U13, _U17 = np.linspace(-1.0, 1.0, 13), np.linspace(-1.0, 1.0, 17)  # curve parameters


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    """(n, 2) points on an axis-aligned ellipse in face units (a fresh array: callers may edit it)."""
    return _unit_circle(n) * (rx, ry) + (cx, cy)


@lru_cache(maxsize=16)
def _unit_circle(n: int) -> np.ndarray:
    """(n, 2) points on the unit circle, cached per n."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


@lru_cache(maxsize=16)
def _unit_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5], shape (n, n) each; cached per size."""
    v = (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5
    return np.meshgrid(v, v)


def _background(nz: _Nuisance, n: int) -> Image.Image:
    """Gradient plus random clutter shapes, on an n x n canvas."""
    xs, ys = _unit_grid(16)  # a linear ramp survives bilinear upsampling: compute it small
    t = xs * math.cos(nz.bg_dir) + ys * math.sin(nz.bg_dir) + 0.5
    c0, c1 = np.array(nz.bg[0], np.float32), np.array(nz.bg[1], np.float32)
    arr = c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]
    img = Image.fromarray(arr.astype(np.uint8), "RGB").resize((n, n), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for kind, (x0, y0, x1, y1, x2, y2), color in nz.clutter:
        box = [min(x0, x1) * n, min(y0, y1) * n, max(x0, x1) * n, max(y0, y1) * n]
        if kind == "ellipse":
            draw.ellipse(box, fill=color)
        elif kind == "rectangle":
            draw.rectangle(box, fill=color)
        elif kind == "triangle":
            draw.polygon([x0 * n, y0 * n, x1 * n, y1 * n, x2 * n, y2 * n], fill=color)
        else:
            draw.line([x0 * n, y0 * n, x1 * n, y1 * n], fill=color, width=max(1, int(n * 0.03)))
    return img


def _face_outline(idn: _Identity, n: int = 40) -> np.ndarray:
    """Egg-shaped face contour: an ellipse whose lower half narrows towards the chin."""
    xy = _ellipse(0.0, 0.0, idn.aspect, 1.0, n)
    xy[:, 0] *= 1.0 - idn.jaw * np.clip(xy[:, 1], 0, None) ** 2
    return xy


def _hair_cap(idn: _Identity, n: int = 20) -> np.ndarray:
    """Hair covering the top of the head: outer arc over the skull, inner arc along the hairline."""
    side_y = -0.15 if idn.hair_style != "fringe" else -0.25
    top = math.asin(min(1.0, -side_y / 1.08))
    phi = np.linspace(top, math.pi - top, n)
    outer = np.stack([idn.aspect * 1.1 * np.cos(phi), -1.08 * np.sin(phi)], 1)
    psi = np.linspace(math.pi, 0, n)
    lift = np.sin(psi) ** (0.25 if idn.hair_style == "fringe" else 0.8)
    inner = np.stack([idn.aspect * 0.97 * np.cos(psi), side_y + (idn.hairline - side_y) * lift], 1)
    return np.concatenate([outer, inner])


def _draw_body_and_head(pen: _Pen, idn: _Identity, nz: _Nuisance) -> None:
    """Shirt, back hair, neck, ears, face, front hair: the identity-only layers."""
    a = idn.aspect
    pen.poly(np.array([[-0.45 * a, 0.95], [0.45 * a, 0.95], [2.0, 2.6], [-2.0, 2.6]]), nz.shirt)
    if idn.hair_style == "long":
        back = np.concatenate(
            [
                _ellipse(0.0, -0.05, a * 1.16, 1.12, 32)[16:],  # upper half, y <= 0
                np.array([[a * 1.2, 1.35], [-a * 1.2, 1.35]]),  # down to the shoulders
            ]
        )
        pen.poly(back, _shade(idn.hair, 0.9))
    elif idn.hair_style == "afro":
        pen.poly(_ellipse(0.0, -0.3, a * 1.5, 1.0, 32), _shade(idn.hair, 0.9))
    pen.poly(
        np.array([[-0.4 * a, 0.4], [0.4 * a, 0.4], [0.42 * a, 1.15], [-0.42 * a, 1.15]]),
        _shade(idn.skin, 0.85),
    )
    ear = _shade(idn.skin, 0.92)
    for s in (-1, 1):
        pen.poly(_ellipse(s * a * 0.97, idn.eye_y + 0.12, 0.11, 0.19, 16), ear, depth=-0.3)
    pen.poly(_face_outline(idn), idn.skin)
    if idn.hair_style != "none":
        pen.poly(_hair_cap(idn), idn.hair, depth=0.1)


def _draw_brows(pen: _Pen, idn: _Identity, ex: _Expr, asym: float) -> None:
    """Two brows as bent polylines: raise, inner raise/lower (sad vs. V frown), arch, squeeze."""
    base = idn.eye_y - idn.eye_h - idn.brow_gap
    half = idn.eye_w * idn.brow_len
    t = np.linspace(0.0, 1.0, 7)  # 0 = inner end, 1 = outer end
    for s in (-1, 1):
        k = 1.0 + 0.12 * asym * s  # slight left/right asymmetry
        x_in = max(0.05, idn.eye_dx - half - ex.brow_squeeze)
        x = s * (x_in + (idn.eye_dx + half - x_in) * t)
        y = (
            base
            - ex.brow_raise * k
            - ex.brow_inner * k * (1 - t)
            + 0.35 * ex.brow_inner * t
            - (0.03 + ex.brow_arch) * 4 * t * (1 - t)
        )
        pen.line(np.stack([x, y], 1), idn.brow_color, idn.brow_w, depth=0.6)


def _lid_curves(idn: _Identity, ex: _Expr, s: int, n: int = 13) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, upper-lid y and lower-lid y of the eye on side s (face units)."""
    u = _U13 if n == 13 else np.linspace(-1.0, 1.0, n)
    x = s * idn.eye_dx + idn.eye_w * u
    bump = (1.0 - u * u) ** 0.6
    inner = np.clip(0.5 - 0.5 * s * u, 0, 1)  # 1 at the corner nearest the nose
    up = idn.eye_h * ex.eye_open * bump * (1.0 - ex.lid_slant * inner)
    low = 0.8 * idn.eye_h * ex.eye_lower * bump
    return x, idn.eye_y - up, idn.eye_y + low


def _draw_eyes(pen: _Pen, idn: _Identity, ex: _Expr) -> None:
    """Sclera, iris clipped to the lids, pupil, and a dark upper-lid line."""
    for s in (-1, 1):
        x, yu, yl = _lid_curves(idn, ex, s)
        pen.poly(
            np.concatenate([np.stack([x, yu], 1), np.stack([x, yl], 1)[::-1]]), (245, 245, 240), depth=0.6
        )
        for rad, color in ((0.075, idn.iris), (0.035, (15, 15, 15))):
            circ = _ellipse(s * idn.eye_dx, idn.eye_y, rad, rad, 16)
            lo, hi = np.interp(circ[:, 0], x, yu), np.interp(circ[:, 0], x, yl)
            circ[:, 1] = np.clip(circ[:, 1], lo, hi)  # iris hidden behind the lids
            pen.poly(circ, color, depth=0.6)
        pen.line(np.stack([x, yu], 1), (30, 22, 20), 0.035, depth=0.6)
        pen.line(np.stack([x, yl], 1), _shade(idn.skin, 0.7), 0.015, depth=0.6)


def _draw_glasses(pen: _Pen, idn: _Identity) -> None:
    """Lens frames around both eyes plus the bridge (identity only, never changes with expression)."""
    rx, ry = idn.eye_w * 1.35, idn.eye_w * 1.0
    for s in (-1, 1):
        lens = _ellipse(s * idn.eye_dx, idn.eye_y, rx, ry, 24)
        if not idn.glasses_round:  # squarer lenses: push points towards the bounding box
            d = lens - [s * idn.eye_dx, idn.eye_y]
            lens = [s * idn.eye_dx, idn.eye_y] + np.sign(d) * np.abs(d) ** 0.6 * np.array([rx, ry]) ** 0.4
        pen.line(np.concatenate([lens, lens[:1]]), idn.glasses_color, 0.03, depth=0.6)
    bridge = np.array([[-idn.eye_dx + rx, idn.eye_y - 0.02], [idn.eye_dx - rx, idn.eye_y - 0.02]])
    pen.line(bridge, idn.glasses_color, 0.03, depth=0.7)


def _draw_nose(pen: _Pen, idn: _Identity, ex: _Expr) -> None:
    """Nose side line and base; disgust adds wrinkles on the bridge and deeper nose-mouth folds."""
    dark = _shade(idn.skin, 0.72)
    tip = idn.eye_y + idn.nose_len
    pen.line(
        np.array([[0.02, idn.eye_y + 0.1], [0.05, tip - 0.03], [0.0, tip], [-0.06, tip - 0.01]]),
        dark,
        0.025,
        depth=1.0,
    )
    for s in (-1, 1):
        pen.poly(_ellipse(s * 0.05, tip - 0.01, 0.022, 0.013, 8), _shade(idn.skin, 0.55), depth=1.0)
    if ex.wrinkle > 0.01:
        crease = _mix(idn.skin, _shade(idn.skin, 0.45), min(1.0, ex.wrinkle))
        for s in (-1, 1):
            for k in range(3):
                y = idn.eye_y + 0.05 + 0.05 * k
                pen.line(np.array([[s * 0.05, y + 0.02], [s * 0.15, y - 0.02]]), crease, 0.02, depth=0.9)
            fold = np.array([[s * 0.09, tip - 0.02], [s * 0.16, tip + 0.06], [s * 0.2, idn.mouth_y - 0.02]])
            pen.line(fold, crease, 0.025, depth=0.8)


def _draw_mouth(pen: _Pen, idn: _Identity, ex: _Expr, asym: float) -> None:
    """Lips as two curves: corners lifted or dropped, a shaped gap, teeth, one-sided lip raise."""
    w = idn.mouth_w * ex.mouth_w
    u = _U17
    x = w * u
    corner = ex.mouth_curve * u * u  # y-down: positive curve lifts the corners
    gap = ex.mouth_open * (1.0 - u * u) ** ex.mouth_round
    side = 1.0 if asym >= 0 else -1.0
    raise_ = ex.lip_raise * np.exp(-(((u - 0.45 * side) / 0.4) ** 2))
    yu = idn.mouth_y - corner - 0.45 * gap - raise_
    yl = idn.mouth_y - corner + 0.55 * gap
    if (gap + raise_).max() > 0.01:
        pen.poly(np.concatenate([np.stack([x, yu], 1), np.stack([x, yl], 1)[::-1]]), (70, 20, 28), depth=0.6)
        if ex.teeth > 0.5:
            yt = np.minimum(yu + 0.06, yl)
            pen.poly(
                np.concatenate([np.stack([x, yu], 1), np.stack([x, yt], 1)[::-1]]), (240, 236, 226), depth=0.6
            )
    lip_w = 0.045 * (1.0 - 0.6 * ex.lip_press)
    lip = _shade(idn.lip, 1.0 - 0.25 * ex.lip_press)
    pen.line(np.stack([x, yu], 1), lip, lip_w, depth=0.6)
    pen.line(np.stack([x, yl], 1), lip, lip_w * 1.3, depth=0.6)


def _light(img: Image.Image, nz: _Nuisance) -> np.ndarray:
    """Directional brightness gradient, contrast, brightness and noise; returns uint8 (H, W, 3)."""
    arr = np.asarray(img, dtype=np.float32)
    xs, ys = _unit_grid(arr.shape[0])
    gain = 1.0 + nz.light_gain * (xs * math.cos(nz.light_dir) + ys * math.sin(nz.light_dir))
    arr = arr * gain[..., None]
    arr = (arr - 128.0) * nz.contrast + (128.0 + nz.brightness) + nz.noise
    return np.clip(arr, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Public rendering API
# --------------------------------------------------------------------------------------------------


def _check_render_args(identity: int, label: int, intensity: float, size: int, identity_seed: int) -> None:
    """Raise FraferError naming the first bad argument."""
    _check_int("identity", identity, 0)
    if not _is_int(label) or not 0 <= label < len(BASIC_EXPRESSIONS):
        raise FraferError(f"label must be an integer in 0..{len(BASIC_EXPRESSIONS) - 1}, got {label!r}")
    if (
        isinstance(intensity, bool)
        or not isinstance(intensity, (int, float, np.integer, np.floating))
        or not (
            0.0 <= float(intensity) <= 1.0  # also rejects NaN
        )
    ):
        raise FraferError(f"intensity must be a number in [0, 1], got {intensity!r}")
    _check_size(size)
    _check_int("identity_seed", identity_seed, 0)


def _is_int(value: object) -> bool:
    """True for Python/numpy integers, False for bools and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(name: str, value: int, minimum: int) -> None:
    """Raise FraferError unless value is an integer >= minimum."""
    if not _is_int(value) or value < minimum:
        raise FraferError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_gain(gain: float) -> None:
    """expression_gain must be a finite number > 0 (0 would erase every expression)."""
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain <= 0:
        raise FraferError(f"expression_gain must be a finite number > 0, got {gain!r}")


def _check_size(size: int) -> None:
    """size must be an integer >= MIN_SIZE (smaller faces lose their eyes and mouth)."""
    _check_int("size", size, MIN_SIZE)


def render_face(
    identity: int,
    label: int,
    intensity: float,
    rng: np.random.Generator,
    size: int = 64,
    identity_seed: int = 0,
    expression_gain: float = EXPRESSION_GAIN,
) -> np.ndarray:
    """Draw one face; returns (size, size, 3) uint8 RGB.

    rng draw order (a contract the tests rely on): first every nuisance value (pose, scale, rotation,
    yaw, background, lighting, noise), then exactly two expression-jitter numbers (intensity jitter
    and left/right asymmetry). So two calls whose rngs start in the same state share pose, lighting
    and background whatever their identity and expression. ``label`` indexes BASIC_EXPRESSIONS;
    ``intensity`` in [0, 1] scales the deformation from neutral (it has no effect on neutral), and
    ``expression_gain`` scales every deformation on top (larger = more salient expressions).
    """
    _check_render_args(identity, label, intensity, size, identity_seed)
    _check_gain(expression_gain)
    idn = _identity(int(identity), int(identity_seed))
    nz = _sample_nuisance(rng, size)
    jitter = rng.uniform(0.85, 1.15)  # per-image wobble of how strongly the face moves
    asym = rng.uniform(-1.0, 1.0)
    ex = _expression(int(label), float(np.clip(float(intensity) * jitter, 0.0, 1.0)), float(expression_gain))

    n = size * _SUPERSAMPLE
    img = _background(nz, n)
    pen = _Pen(ImageDraw.Draw(img), nz, _SUPERSAMPLE)
    _draw_body_and_head(pen, idn, nz)
    if idn.glasses:
        _draw_glasses(pen, idn)
    _draw_brows(pen, idn, ex, asym)
    _draw_eyes(pen, idn, ex)
    _draw_nose(pen, idn, ex)
    _draw_mouth(pen, idn, ex, asym)
    return _light(img.reduce(_SUPERSAMPLE), nz)


def face_regions(
    identity: int,
    rng: np.random.Generator,
    size: int = 64,
    identity_seed: int = 0,
    expression_gain: float = EXPRESSION_GAIN,
) -> dict[str, np.ndarray]:
    """Boolean (size, size) masks of where an expression can change pixels: brows, eyes, nose, mouth.

    Consumes rng exactly like the nuisance part of render_face, so with an rng in the same state the
    masks line up with that rendered image (for any label and intensity). Useful to test and to
    measure region awareness. Pass the expression_gain the images were rendered with.
    """
    _check_render_args(identity, 0, 0.0, size, identity_seed)
    _check_gain(expression_gain)
    idn = _identity(int(identity), int(identity_seed))
    nz = _sample_nuisance(rng, size)
    margin = 1.5 / nz.radius  # ~1.5 output pixels, in face units
    g = float(expression_gain)  # the furthest any feature moves grows with the gain
    ex_w = idn.eye_dx + max(idn.eye_w * idn.brow_len, idn.eye_w * (1 + 0.35 * g)) + margin
    brow_y = idn.eye_y - idn.eye_h - idn.brow_gap
    mw = idn.mouth_w * (1 + 0.3 * g) * 1.15 + 0.03 + margin
    boxes = {  # (x0, y0, x1, y1, depth) in face units
        "brows": (-ex_w, brow_y - 0.28 * g - margin, ex_w, brow_y + 0.16 * g + margin, 0.6),
        "eyes": (
            -ex_w,
            idn.eye_y - (1 + g) * idn.eye_h - margin,
            ex_w,
            idn.eye_y + (1 + 0.3 * g) * idn.eye_h + margin,
            0.6,
        ),
        "nose": (-0.24 - margin, idn.eye_y + 0.02 - margin, 0.24 + margin, idn.mouth_y + margin, 0.9),
        "mouth": (-mw, idn.mouth_y - 0.22 * g - margin, mw, idn.mouth_y + 0.28 * g + margin, 0.6),
    }
    out = {}
    for name, (x0, y0, x1, y1, depth) in boxes.items():
        mask = Image.new("L", (size, size), 0)
        pen = _Pen(ImageDraw.Draw(mask), nz, 1.0)
        pen.draw.polygon(pen.pts(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), depth), fill=255)
        out[name] = np.asarray(mask) > 0
    return out


# --------------------------------------------------------------------------------------------------
# Simulated annotators
# --------------------------------------------------------------------------------------------------

# What an annotator who misses the true expression picks instead (FERPlus column -> weight).
_CONFUSIONS: dict[str, dict[str, float]] = {
    "neutral": {"sadness": 0.4, "happiness": 0.2, "anger": 0.2, "contempt": 0.2},
    "happy": {"neutral": 0.5, "surprise": 0.2, "contempt": 0.3},
    "sad": {"neutral": 0.6, "fear": 0.2, "anger": 0.1, "disgust": 0.1},
    "surprise": {"fear": 0.6, "happiness": 0.2, "neutral": 0.2},
    "fear": {"surprise": 0.6, "sadness": 0.2, "neutral": 0.2},
    "disgust": {"anger": 0.6, "sadness": 0.2, "neutral": 0.2},
    "anger": {"disgust": 0.5, "neutral": 0.3, "sadness": 0.2},
}
_P_UNKNOWN = 0.03
_P_NEUTRAL_AGREE = 0.8  # neutral faces look the same at every intensity


def _vote_probs(label: int, intensity: float) -> np.ndarray:
    """Probability that one annotator picks each FERPlus column."""
    name = BASIC_EXPRESSIONS[label]
    probs = np.zeros(len(FERPLUS_COLUMNS))
    p_true = _P_NEUTRAL_AGREE if name == "neutral" else 0.35 + 0.6 * intensity  # 0.35 .. 0.95
    probs[EXPRESSION_TO_FERPLUS[name]] = p_true
    probs[FERPLUS_COLUMNS.index("unknown")] = _P_UNKNOWN
    confused = dict(_CONFUSIONS[name])
    if name != "neutral":  # weak expressions get mistaken for neutral
        confused["neutral"] = confused.get("neutral", 0.0) + 1.5 * (1.0 - intensity)
    total = sum(confused.values())
    for column, weight in confused.items():
        probs[FERPLUS_COLUMNS.index(column)] += (1.0 - p_true - _P_UNKNOWN) * weight / total
    return probs


def simulate_votes(label: int, intensity: float, rng: np.random.Generator) -> tuple[int, ...]:
    """NUM_VOTES annotators' counts over FERPLUS_COLUMNS; agreement with `label` rises with intensity."""
    return tuple(int(c) for c in rng.multinomial(NUM_VOTES, _vote_probs(label, intensity)))


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------


def _block_labels(seed: int, count: int) -> np.ndarray:
    """Labels for indices 0..count-1: each block of 7 consecutive indices is a shuffled 0..6.

    Keyed per block, so the label of image i does not depend on the dataset length, and any
    prefix is balanced to within one image per class.
    """
    k = len(BASIC_EXPRESSIONS)
    blocks = [np.random.default_rng([seed, _TAG_LABELS, b]).permutation(k) for b in range(-(-count // k))]
    return np.concatenate(blocks)[:count].astype(np.int64) if blocks else np.zeros(0, np.int64)


class SyntheticFaces:
    """Map-style dataset of synthetic faces: ``ds[i] -> (PIL RGB image, label)``.

    Image i is rendered on first access from ``default_rng([seed, 2, i])`` (cached only when
    ``cache=True``); its identity, intensity and votes come from ``default_rng([seed, 1, i])`` and are
    available through ``meta(i)`` without rendering. Identities are one shared population (identity k
    is the same person in every dataset), so disjoint ``identity_offset`` ranges give disjoint people.
    Labels are balanced: every block of 7 consecutive indices holds each class once, in shuffled order.
    Intensity is uniform on INTENSITY_RANGE = [0.5, 1.0] (see there why); ``expression_gain`` scales
    every expression's deformation (EXPRESSION_GAIN by default).
    """

    def __init__(
        self,
        num_images: int,
        size: int = 64,
        num_identities: int = 200,
        seed: int = 0,
        identity_offset: int = 0,
        cache: bool = False,
        expression_gain: float = EXPRESSION_GAIN,
    ) -> None:
        _check_int("num_images", num_images, 1)
        _check_size(size)
        _check_int("num_identities", num_identities, 1)
        _check_int("seed", seed, 0)
        _check_int("identity_offset", identity_offset, 0)
        _check_gain(expression_gain)
        self.expression_gain = float(expression_gain)
        self.num_images, self.size = int(num_images), int(size)
        self.num_identities, self.seed = int(num_identities), int(seed)
        self.identity_offset = int(identity_offset)
        self.classes: tuple[str, ...] = BASIC_EXPRESSIONS
        self.labels: np.ndarray = _block_labels(self.seed, self.num_images)  # (num_images,) int64
        self._cache: dict[int, Image.Image] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_images

    def _index(self, i: int) -> int:
        """Normalise a (possibly negative) index; IndexError when out of range."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        j = int(i) + self.num_images if i < 0 else int(i)
        if not 0 <= j < self.num_images:
            raise IndexError(f"index {i} out of range for {self.num_images} images")
        return j

    def meta(self, i: int) -> SyntheticFace:
        """Identity, true label, intensity and simulated votes of image i (no rendering)."""
        j = self._index(i)
        rng = np.random.default_rng([self.seed, _TAG_META, j])
        identity = self.identity_offset + int(rng.integers(self.num_identities))
        intensity = float(rng.uniform(*INTENSITY_RANGE))
        label = int(self.labels[j])
        return SyntheticFace(j, identity, label, intensity, simulate_votes(label, intensity, rng))

    def image(self, i: int) -> np.ndarray:
        """Pixels of image i as (size, size, 3) uint8 (always freshly rendered)."""
        m = self.meta(i)
        rng = np.random.default_rng([self.seed, _TAG_RENDER, m.index])
        return render_face(m.identity, m.label, m.intensity, rng, self.size, _IDENTITY_SEED, self.expression_gain)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        j = self._index(i)
        if self._cache is not None and j in self._cache:
            return self._cache[j].copy(), int(self.labels[j])
        img = Image.fromarray(self.image(j), "RGB")
        if self._cache is not None:
            self._cache[j] = img.copy()
        return img, int(self.labels[j])


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    num_images: int,
    size: int = 64,
    num_identities: int = 200,
    seed: int = 0,
    identity_offset: int = 0,
    usage: str = "Training",
    expression_gain: float = EXPRESSION_GAIN,
) -> Path:
    """Write a SyntheticFaces dataset to disk in ImageFolder + FERPlus layout; returns out_dir.

    Layout: ``<out_dir>/<expression>/<index:06d>.png``; ``votes.csv`` with the FERPlus header
    ``Usage,Image name,<FERPLUS_COLUMNS>`` (Image name relative to out_dir); ``meta.csv`` with
    ``Image name,identity,label,intensity``. Every file is written to a temporary name and moved into
    place, so an interrupted run never leaves a truncated PNG or CSV; rerunning overwrites.
    """
    if not isinstance(usage, str) or not usage or any(c in usage for c in ',"\r\n'):
        raise FraferError(
            f"usage must be a non-empty string without commas, quotes or newlines, got {usage!r}"
        )
    ds = SyntheticFaces(num_images, size, num_identities, seed, identity_offset, expression_gain=expression_gain)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    votes_rows, meta_rows = [], []
    for i in range(len(ds)):
        m = ds.meta(i)
        name = f"{BASIC_EXPRESSIONS[m.label]}/{i:06d}.png"
        path = root / name
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda tmp, i=i: Image.fromarray(ds.image(i), "RGB").save(tmp, format="PNG"))
        votes_rows.append([usage, name, *m.votes])
        meta_rows.append([name, m.identity, m.label, f"{m.intensity:.4f}"])
    atomic_write_text(root / "votes.csv", _csv_text(["Usage", "Image name", *FERPLUS_COLUMNS], votes_rows))
    atomic_write_text(
        root / "meta.csv", _csv_text(["Image name", "identity", "label", "intensity"], meta_rows)
    )
    return root


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    """Render a header and rows as CSV text with \\n line endings."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def compose_group_picture(faces: list[np.ndarray], gap: int = 40, background: int = 96,
                          ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Square face images side by side on a plain canvas, `gap` pixels apart → (RGB image, their boxes x1 y1 x2 y2).

    What `frafer demo` and the tests run `predict` on: a "group photo" whose faces sit at known places.
    """
    side = max(f.shape[0] for f in faces)
    canvas = np.full((side + 2 * gap, len(faces) * (side + gap) + gap, 3), background, np.uint8)
    boxes = []
    for k, face in enumerate(faces):
        h, w = face.shape[:2]
        x, y = gap + k * (side + gap), gap + (side - h) // 2
        canvas[y:y + h, x:x + w] = face
        boxes.append((x, y, x + w, y + h))
    return canvas, boxes
