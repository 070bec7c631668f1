"""Procedural chest images for the offline stand-ins: radiographs and CT slices whose class shows in
the lungs (lobar consolidation, diffuse interstitial pattern, bilateral peripheral opacities...)
and whose framing differs by source (:class:`Style`), as in the real data.

Not a model of radiography: enough anatomy (body, lungs, heart, soft-tissue texture) that a CNN
must look at the lungs to tell the classes apart, that a perceptual hash tells two drawings apart,
and that a source's framing is a learnable shortcut when ``source_shift`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# How each upstream finding (any source's) shows in a drawn image.
PATTERN_OF_FINDING = {
    "COVID-19": "covid",
    "COVID-19, ARDS": "covid",
    "SARS": "viral",
    "Streptococcus": "bacteria",
    "Klebsiella": "bacteria",
    "Legionella": "bacteria",
    "Chlamydophila": "bacteria",
    "E.Coli": "bacteria",
    "Pneumocystis": "perihilar",
    "ARDS": "whiteout",
    "No Finding": "normal",
    "bacteria": "bacteria",
    "virus": "viral",
    "NORMAL": "normal",
}


@dataclass(frozen=True)
class Style:
    """How a source frames its images: the non-medical cues a model could learn instead."""

    thorax_scale: float
    brightness: float
    contrast: float
    marker: bool
    border: float


ADULT = Style(thorax_scale=1.0, brightness=0.0, contrast=0.85, marker=True, border=0.0)
CHILD = Style(thorax_scale=0.78, brightness=0.12, contrast=1.15, marker=False, border=0.06)
NEUTRAL = Style(thorax_scale=0.9, brightness=0.06, contrast=1.0, marker=False, border=0.03)
# A third site: adults, but framed and exposed differently from the COVID collection.
OTHER_SITE = Style(thorax_scale=0.95, brightness=-0.06, contrast=0.95, marker=False, border=0.0)


@dataclass(frozen=True)
class Frame:
    """Where a drawing places its shapes: each pixel's position in the patient's frame, centred and
    scaled (``u``, ``v``; float32 arrays, height x width), then turned as positioning varies."""

    u: np.ndarray
    v: np.ndarray

    @classmethod
    def turned(cls, x: np.ndarray, y: np.ndarray, angle: float) -> Frame:
        """The frame of centred, scaled coordinates ``x``, ``y`` rotated by ``angle`` radians."""
        return cls(x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle))

    def ellipse(self, x0: float, y0: float, rx: float, ry: float) -> np.ndarray:
        """Pixels inside the ellipse centred at (``x0``, ``y0``) with radii ``rx``, ``ry`` (bool)."""
        return ((self.u - x0) / rx) ** 2 + ((self.v - y0) / ry) ** 2 <= 1.0

    def blob(self, x0: float, y0: float, sigma: float) -> np.ndarray:
        """A Gaussian of width ``sigma`` centred at (``x0``, ``y0``), 1 at its centre."""
        return np.exp(-(((self.u - x0) ** 2 + (self.v - y0) ** 2) / (2 * sigma**2)))


# Vertices of each lung outline :func:`draw_chest_with_lungs` returns.
OUTLINE_VERTICES = 96


@dataclass(frozen=True)
class DrawnLungs:
    """The lungs a drawing painted: its pixels (``mask``, bool, height x width) and their outlines, the
    (right, left) ellipses as ``(n, 2)`` (x, y) polygons in pixels with (0, 0) the top-left corner of
    the top-left pixel (pixel (column, row) spans [column, column + 1) x [row, row + 1)), as Darwin
    JSON and COCO place polygons."""

    mask: np.ndarray
    outlines: tuple[np.ndarray, np.ndarray]


def draw_chest(rng: np.random.Generator, width: int, height: int, pattern: str, style: Style) -> np.ndarray:
    """A grayscale chest radiograph-like image (uint8, height x width) showing ``pattern``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Every random choice of the drawing; the same state gives the same image.
    width, height : int
        The image's size in pixels.
    pattern : str
        How the finding shows (a value of :data:`PATTERN_OF_FINDING`).
    style : Style
        The source's framing.

    Returns
    -------
    numpy.ndarray
        The image; :func:`draw_chest_with_lungs` draws the same one and also returns its lungs.
    """
    return draw_chest_with_lungs(rng, width, height, pattern, style)[0]


def draw_chest_with_lungs(
    rng: np.random.Generator, width: int, height: int, pattern: str, style: Style
) -> tuple[np.ndarray, DrawnLungs]:
    """A chest radiograph-like image, as :func:`draw_chest` draws it, and where it painted the lungs.

    No two drawings are the same radiograph, as no two exposures are: the soft-tissue texture and,
    slightly, body, lung and heart sizes and positioning (shift, rotation, inspiration) vary from
    image to image, so a perceptual hash tells two drawings apart as it tells two real radiographs
    apart, while a re-encoded or resized copy of one drawing stays its near-duplicate. The lungs,
    where the findings are, keep the texture faint (0.02 against 0.08 around them).

    Parameters
    ----------
    rng : numpy.random.Generator
        Every random choice of the drawing, drawn in the same order as :func:`draw_chest` draws them.
    width, height : int
        The image's size in pixels.
    pattern : str
        How the finding shows (a value of :data:`PATTERN_OF_FINDING`).
    style : Style
        The source's framing.

    Returns
    -------
    tuple of numpy.ndarray and DrawnLungs
        The image (uint8, height x width) and its lungs: the pixels the lungs' shade was painted on
        and their outlines (:data:`OUTLINE_VERTICES` vertices each) in pixels of the upright image.

    Raises
    ------
    ValueError
        When ``pattern`` is not one the drawing knows.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    scale = style.thorax_scale * rng.uniform(0.95, 1.05)
    cx, cy = 0.5 + rng.normal(0, 0.015), 0.55 + rng.normal(0, 0.015)
    angle = np.deg2rad(rng.uniform(-1.5, 1.5))
    x0, y0 = (xx - cx) / scale, (yy - cy) / scale
    frame = Frame.turned(x0, y0, angle)
    u, v, ellipse, blob = frame.u, frame.v, frame.ellipse, frame.blob

    def size() -> float:
        return rng.uniform(0.97, 1.03)

    image = np.full((height, width), 0.08, np.float32)
    body = ellipse(0.0, 0.0, 0.44 * size(), 0.5)
    image[body] = 0.5
    lung_width, lung_height = size(), size()
    right_lung, left_lung = (
        (-0.19, -0.04, 0.15 * lung_width, 0.3 * lung_height),
        (0.19, -0.04, 0.14 * lung_width, 0.29 * lung_height),
    )
    lungs = ellipse(*right_lung) | ellipse(*left_lung)
    placement = (cx, cy, scale, angle, width, height)
    drawn = DrawnLungs(lungs, (_outline(right_lung, placement), _outline(left_lung, placement)))
    image[lungs] = 0.2
    ribs = (np.sin(2 * np.pi * (v * 7.0 * size() + 1.5 * u**2) + rng.uniform(0, 2 * np.pi)) > 0.75) & lungs
    image[ribs] += 0.07
    image[np.abs(u) < 0.035] = 0.72
    heart_size = size()
    heart = ellipse(0.06, 0.14, 0.13 * heart_size, 0.11 * heart_size)
    image[heart] = np.maximum(image[heart], 0.6)
    diaphragm = (v > 0.24 + rng.normal(0, 0.02) + 0.06 * np.cos(u * 6)) & body
    image[diaphragm] = np.maximum(image[diaphragm], 0.62)

    severity = rng.uniform(0.7, 1.2)
    lungs_f = lungs.astype(np.float32)
    if pattern == "bacteria":
        side = rng.choice([-0.19, 0.19])
        lobe = rng.choice([-0.18, 0.02, 0.16])
        image += 0.5 * severity * blob(side, lobe, rng.uniform(0.05, 0.08)) * lungs_f
    elif pattern == "viral":
        freq = rng.uniform(38, 48)
        phase = rng.uniform(0, 2 * np.pi, 2)
        mesh = np.abs(np.sin(freq * u + phase[0]) * np.sin(freq * v + phase[1]))
        hilar = blob(-0.1, -0.02, 0.16) + blob(0.1, -0.02, 0.16)
        image += 0.18 * severity * mesh * lungs_f * (0.5 + hilar)
    elif pattern == "covid":
        lower = rng.uniform(0.05, 0.15)
        periphery = blob(-0.3, lower, 0.07) + blob(0.3, lower, 0.07)
        image += 0.38 * severity * periphery * lungs_f
    elif pattern == "perihilar":
        image += 0.25 * severity * (blob(-0.1, -0.05, 0.1) + blob(0.1, -0.05, 0.1)) * lungs_f
    elif pattern == "whiteout":
        image += 0.3 * severity * lungs_f
    elif pattern != "normal":
        raise ValueError(f"unknown synthetic pattern {pattern!r}")

    # Soft-tissue texture: smooth noise, faint over the lungs so that it never mimics a finding.
    texture = Image.fromarray(rng.normal(0, 1, (18, 18)).astype(np.float32), mode="F")
    image += np.asarray(texture.resize((width, height), Image.Resampling.BICUBIC)) * (0.08 - 0.06 * lungs_f)
    image = (image - 0.4) * style.contrast + 0.4 + style.brightness
    if style.border:
        edge = (xx < style.border) | (xx > 1 - style.border) | (yy < style.border) | (yy > 1 - style.border)
        image[edge] = 0.02
    if style.marker:
        image[(xx > 0.84) & (xx < 0.92) & (yy > 0.06) & (yy < 0.14)] = 0.97
    image += rng.normal(0, 0.025, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), drawn


def _outline(ellipse: tuple[float, float, float, float], placement: tuple) -> np.ndarray:
    """The ellipse (``x0``, ``y0``, ``rx``, ``ry``) of the turned frame as (x, y) pixel vertices.

    Inverts :func:`draw_chest_with_lungs`'s map from pixel to frame: pixel (column, row) is drawn
    at ``xx = column / width``, ``yy = row / height``, turned by ``angle`` about the centre
    (``cx``, ``cy``) and divided by ``scale``; its centre is at (column + 0.5, row + 0.5).
    """
    cx, cy, scale, angle, width, height = placement
    x0, y0, rx, ry = ellipse
    t = np.linspace(0, 2 * np.pi, OUTLINE_VERTICES, endpoint=False)
    u, v = x0 + rx * np.cos(t), y0 + ry * np.sin(t)
    x, y = u * np.cos(angle) + v * np.sin(angle), -u * np.sin(angle) + v * np.cos(angle)
    return np.stack([(cx + scale * x) * width + 0.5, (cy + scale * y) * height + 0.5], axis=1)


def draw_ct_slice(rng: np.random.Generator, width: int, height: int, pattern: str, axial: bool) -> np.ndarray:
    """A grayscale CT slice-like image (uint8, height x width), lung window, showing ``pattern``.

    Axial: the body's cross-section with two dark lung fields, the spine behind them and the
    scanner table below; coronal: the lungs seen from the front. COVID-19 shows as the subpleural
    ground-glass opacities of the CT literature, bacterial pneumonia as dense consolidation.
    Size, position, rotation and texture vary from slice to slice, as in :func:`draw_chest`.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale, angle = rng.uniform(0.9, 1.1), np.deg2rad(rng.uniform(-5, 5))
    x0 = (xx / width - 0.5 + rng.normal(0, 0.03)) / scale
    y0 = (yy / height - 0.5 + rng.normal(0, 0.03)) / scale
    frame = Frame.turned(x0, y0, angle)
    u, v, ellipse, blob = frame.u, frame.v, frame.ellipse, frame.blob

    image = np.full((height, width), 0.02, np.float32)
    if axial:
        body = ellipse(0.0, 0.0, 0.44, 0.31)
        image[body] = 0.55
        lungs = ellipse(-0.18, -0.02, 0.15, 0.22) | ellipse(0.18, -0.02, 0.14, 0.21)
        image[lungs] = 0.08
        image[ellipse(0.0, 0.22, 0.05, 0.05)] = 0.95  # vertebra
        image[ellipse(0.03, 0.02, 0.09, 0.08)] = 0.6  # heart and great vessels
        image[(v > 0.36) & (v < 0.38) & (np.abs(u) < 0.45)] = 0.7  # scanner table
        periphery = [(-0.3, 0.05), (0.3, 0.05), (-0.25, 0.15), (0.25, 0.15)]
    else:
        body = ellipse(0.0, 0.05, 0.42, 0.45)
        image[body] = 0.55
        lungs = ellipse(-0.18, -0.02, 0.14, 0.3) | ellipse(0.18, -0.02, 0.13, 0.29)
        image[lungs] = 0.08
        image[ellipse(0.04, 0.18, 0.11, 0.1)] = 0.6
        periphery = [(-0.29, 0.1), (0.29, 0.1), (-0.27, -0.15), (0.27, -0.15)]
    vessels = (np.sin(60 * u + rng.uniform(0, 6)) * np.sin(55 * v + rng.uniform(0, 6)) > 0.93) & lungs
    image[vessels] += 0.15
    severity = rng.uniform(0.7, 1.2)
    lungs_f = lungs.astype(np.float32)
    if pattern == "covid":
        chosen = rng.choice(len(periphery), size=int(rng.integers(2, 5)), replace=False)
        opacity = sum(blob(*periphery[index], rng.uniform(0.04, 0.07)) for index in chosen)
        image += 0.3 * severity * opacity * lungs_f
    elif pattern == "bacteria":
        image += 0.6 * severity * blob(rng.choice([-0.18, 0.18]), rng.uniform(-0.1, 0.1), 0.06) * lungs_f
    elif pattern == "viral":
        mesh = np.abs(np.sin(rng.uniform(38, 48) * u) * np.sin(rng.uniform(38, 48) * v))
        image += 0.2 * severity * mesh * lungs_f
    elif pattern == "perihilar":
        image += 0.3 * severity * (blob(-0.09, 0.0, 0.07) + blob(0.09, 0.0, 0.07)) * lungs_f
    elif pattern == "whiteout":
        image += 0.35 * severity * lungs_f
    elif pattern != "normal":
        raise ValueError(f"unknown synthetic pattern {pattern!r}")
    texture = Image.fromarray(rng.normal(0, 1, (18, 18)).astype(np.float32), mode="F")
    image += 0.06 * np.asarray(texture.resize((width, height), Image.Resampling.BICUBIC)) * (0.3 + lungs_f)
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)
