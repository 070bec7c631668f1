"""``cxr-predict --explain``: the predicted class's Grad-CAM map over each input, as a person reads it.

The map is computed on the model's square input by the shortcut audit's
:func:`cxr.report.audit.gradcam.gradcam` (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
Networks via Gradient-based Localization", ICCV 2017), then stretched back onto the image at its own
aspect (the model's input squashes it to a square), with the long side
:data:`cxr.serve.reading.PREVIEW_SIDE` pixels.
A caption strip under the image names the predicted class, its calibrated probability, the model
and layer, and carries the colour scale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxr.core.figures import saliency_colours, saliency_overlay
from cxr.report.audit.gradcam import gradcam

LINE_HEIGHT = 18  # pixels per line of the caption strip under the image
SCALE_WIDTH = 120  # pixels of the colour scale in the caption strip


class Explainer:
    """Writes the predicted class's Grad-CAM overlay of each image to
    ``<folder>/<the input's path below the inputs' common folder>.gradcam.png``: two files of the same
    name in different folders (CheXpert's ``view1_frontal.jpg``) get two overlays.

    Parameters
    ----------
    folder : Path
        Where the overlays go (created).
    backbone : str
        The model's backbone, named in the caption.
    batch_size : int
        Images per Grad-CAM batch.
    names : list of str
        Every input's name, for the overlays' relative paths.
    classes : list of str
        The model's classes, in output order (for the caption).
    layer : str or None
        The base's layer Grad-CAM reads, None for its output: the shortcut audit's choice
        (:func:`cxr.report.audit.gradcam.gradcam_layer`).
    """

    def __init__(
        self, folder: Path, backbone: str, batch_size: int, names: list[str], classes: list[str], layer: str | None
    ):
        self.folder, self.backbone, self.batch_size, self.classes = folder, backbone, batch_size, classes
        self.layer = layer
        self.relative = overlay_names(names)
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(
        self, model, names: list[str], batch: np.ndarray, probabilities: np.ndarray, previews: list[np.ndarray]
    ) -> list[tuple[str, str]]:
        """Overlays of one batch.

        Parameters
        ----------
        model : keras.Model
            The classifier.
        names : list of str
            The images' names.
        batch : numpy.ndarray
            Their model inputs, shape (n, size, size, 3), 0-255.
        probabilities : numpy.ndarray
            Their calibrated class probabilities, shape (n, classes).
        previews : list of numpy.ndarray
            Each image in gray, uint8, shape (height, width) at its own aspect (the long side
            :data:`cxr.serve.reading.PREVIEW_SIDE`).

        Returns
        -------
        list of (str, str)
            Per image, (the overlay written, "") or, when the map is empty (no positive evidence for
            the predicted class at the layer), ("", a note saying so): no blank picture is written.
        """
        predicted = np.argmax(probabilities, axis=1)
        written = []
        for start in range(0, len(names), self.batch_size):
            part = slice(start, start + self.batch_size)
            maps = gradcam(model, batch[part], predicted[part], self.layer)
            for index, saliency in enumerate(maps, start=start):
                if not saliency.any():
                    written.append(
                        (
                            "",
                            f"Grad-CAM map empty (no positive evidence for the predicted class at "
                            f"layer {self.layer or 'the base output'}): no overlay written",
                        )
                    )
                    continue
                target = self.folder / f"{self.relative.get(names[index], Path(names[index]).name)}.gradcam.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                name = self.classes[predicted[index]]
                caption = (
                    f"{name}  p = {probabilities[index, predicted[index]]:.2f} (calibrated)\n"
                    f"Grad-CAM of {name}: {self.backbone}, layer {self.layer or 'base output'}; research use only"
                )
                captioned_overlay(previews[index], saliency, caption).save(target)
                written.append((str(target), ""))
        return written


def captioned_overlay(preview: np.ndarray, saliency: np.ndarray, caption: str) -> Image.Image:
    """``saliency`` stretched onto ``preview`` with a caption strip and the colour scale below.

    Parameters
    ----------
    preview : numpy.ndarray
        The image in gray, uint8, shape (height, width).
    saliency : numpy.ndarray
        The map on the model's square input, shape (size, size), values in [0, 1].
    caption : str
        Lines of text, each wrapped at word boundaries to the image's width; the colour scale goes
        right of the first line where it fits, else on a line of its own.

    Returns
    -------
    PIL.Image.Image
        RGB, ``width`` x (``height`` + the caption strip's height).
    """
    height, width = preview.shape
    stretched = np.asarray(Image.fromarray(saliency.astype(np.float32)).resize((width, height)))
    picture = saliency_overlay(preview[..., None].astype(np.float32), np.clip(stretched, 0.0, 1.0))
    font = ImageFont.load_default(size=13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [line for text in caption.split("\n") for line in wrapped(text, font, width - 12, measure)]
    scale = min(SCALE_WIDTH, width // 4)
    left = width - scale - 36  # "low" and "high" either side of the ramp
    beside = left > 6 + measure.textlength(lines[0], font=font) + 8
    top = 0 if beside else LINE_HEIGHT  # the scale's row: beside the first line, or above the text
    canvas = Image.new("RGB", (width, height + 8 + top + LINE_HEIGHT * len(lines)), "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    ramp = (np.repeat(saliency_colours(scale)[None], 12, axis=0) * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(ramp), (left, height + 6))
    draw.text((left - 4, height + 5), "low", fill="black", font=font, anchor="ra")
    draw.text((left + scale + 4, height + 5), "high", fill="black", font=font)
    for index, line in enumerate(lines):
        draw.text((6, height + 4 + top + LINE_HEIGHT * index), line, fill="black", font=font)
    return canvas


def wrapped(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """``text`` split at spaces into lines no wider than ``width`` pixels in ``font`` (a single word
    wider than that stays whole on its line)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def overlay_names(names: list[str]) -> dict[str, str]:
    """Each input path -> its path below the inputs' common folder (distinct paths stay distinct)."""
    if not names:
        return {}
    absolute = [os.path.abspath(name) for name in names]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return {name: os.path.relpath(path, common) for name, path in zip(names, absolute)}
