"""Matplotlib figures for reports and MLflow: curves, confusion matrices, ROC, reliability, comparisons."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def training_curves(history: pd.DataFrame, title: str) -> Figure:
    """Loss and accuracy per epoch, train and validation: the study's training plot."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    _curves(axes, history, "")
    figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def curves_side_by_side(histories: dict[str, pd.DataFrame]) -> Figure:
    """Every model's loss and accuracy curves in one row each, on shared axes."""
    figure, axes = plt.subplots(
        len(histories), 2, figsize=(10, 3 * len(histories)), squeeze=False, sharex="col", sharey="col"
    )
    for row, (name, history) in zip(axes, histories.items()):
        _curves(row, history, name)
    figure.tight_layout()
    plt.close(figure)
    return figure


def _curves(axes, history: pd.DataFrame, name: str) -> None:
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(history["epoch"], history[metric], label=f"train {metric}")
        axis.plot(history["epoch"], history[f"val_{metric}"], label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(f"{name} {metric}".strip())
        axis.legend()


def confusion(matrix: list[list[int]], labels: list[str], title: str) -> Figure:
    figure, axis = plt.subplots(figsize=(5, 4.5))
    values = np.asarray(matrix)
    axis.imshow(values, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    for (i, j), value in np.ndenumerate(values):
        axis.text(j, i, str(value), ha="center", va="center", color="white" if value > values.max() / 2 else "black")
    axis.set_title(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


def roc(predictions: pd.DataFrame, classes: list[str], aucs: dict[str, float | None], title: str) -> Figure:
    """One-vs-rest ROC curve per class."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    for name in classes:
        if aucs.get(name) is None:
            continue
        false_positive, true_positive, _ = roc_curve(predictions["actual"] == name, predictions[f"p_{name}"])
        axis.plot(false_positive, true_positive, label=f"{name} (AUC {aucs[name]:.2f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    plt.close(figure)
    return figure


def reliability(tables: dict[str, pd.DataFrame], title: str) -> Figure:
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per
    table (e.g. ``{"softmax": ..., "calibrated": ...}``, each ``cxr.report.calibration.reliability``'s
    table), the diagonal being perfect calibration; the bars below count images per bin."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for (label, table), offset in zip(tables.items(), (-0.25, 0.25)):
        filled = table[table["images"] > 0]
        top.plot(filled["confidence"], filled["accuracy"], marker="o", label=label)
        width = float(table["bin_high"].iloc[0] - table["bin_low"].iloc[0])
        bottom.bar(table["bin_low"] + width * (0.5 + offset / 2), table["images"], width=width / 2, label=label)
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(loc="upper left")
    bottom.set(xlabel="confidence (highest probability)", ylabel="images")
    figure.tight_layout()
    plt.close(figure)
    return figure


def comparison_bars(table: pd.DataFrame, metrics: list[str]) -> Figure:
    """Per model, each metric with its 95% interval as an error bar."""
    figure, axis = plt.subplots(figsize=(max(6, 1.8 * len(table)), 4))
    width = 0.8 / len(metrics)
    positions = np.arange(len(table))
    for index, metric in enumerate(metrics):
        values = table[metric].to_numpy()
        errors = np.vstack([values - table[f"{metric}_low"].to_numpy(), table[f"{metric}_high"].to_numpy() - values])
        axis.bar(positions + index * width, values, width, yerr=errors, capsize=3, label=metric)
    axis.set_xticks(positions + width * (len(metrics) - 1) / 2, table["model"])
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("test set, 95% CI (patient bootstrap)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    plt.close(figure)
    return figure


def cross_source_matrix(table: pd.DataFrame, statistics: dict[str, str], title: str) -> Figure:
    """One heat map per statistic: training sources (rows) by test sets (columns, the in-distribution
    test split first), each cell its mean over seeds, written with its SD and the pooled estimate's 95%
    interval; grey where not measured.

    ``table`` is :func:`cxr.report.cross_source.table`'s (``trained_on``, ``test``, ``in_distribution``,
    ``statistic``, ``mean``, ``sd``, ``low``, ``high``); ``statistics`` maps each statistic drawn to its
    panel's title."""
    rows = sorted(set(table["trained_on"]))
    inside = sorted(set(table.loc[table["in_distribution"], "test"]))
    columns = [*inside, *sorted(set(table["test"]) - set(inside))]
    figure, axes = plt.subplots(
        1,
        len(statistics),
        figsize=(len(statistics) * (1.25 * len(columns) + 0.6) + 1.6, 0.9 * len(rows) + 1.8),
        squeeze=False,
    )
    for axis, (statistic, heading) in zip(axes[0], statistics.items()):
        chosen = table[table["statistic"] == statistic].set_index(["trained_on", "test"])
        means = np.full((len(rows), len(columns)), np.nan)
        for i, row in enumerate(rows):
            for j, column in enumerate(columns):
                if (row, column) in chosen.index and pd.notna(chosen.loc[(row, column), "mean"]):
                    means[i, j] = chosen.loc[(row, column), "mean"]
                    cell = chosen.loc[(row, column)]
                    note = f"{means[i, j]:.2f}" + (f" ± {cell['sd']:.2f}" if pd.notna(cell["sd"]) else "")
                    note += f"\n[{cell['low']:.2f}, {cell['high']:.2f}]"
                    colour = "white" if means[i, j] < 0.5 else "black"
                    axis.text(j, i, note, ha="center", va="center", fontsize=7, color=colour)
        colours = plt.get_cmap("viridis").copy()
        colours.set_bad("lightgrey")
        axis.imshow(np.ma.masked_invalid(means), cmap=colours, vmin=0, vmax=1, aspect="auto")
        axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
        axis.set_yticks(range(len(rows)), rows if axis is axes[0][0] else [""] * len(rows), fontsize=8)
        axis.set_title(heading)
    axes[0][0].set_ylabel("trained on")
    figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure


SALIENCY_ALPHA = 0.45  # weight of the colour map where the saliency is 1


def saliency_colours(steps: int = 256, gray: float = 0.5, alpha: float = SALIENCY_ALPHA) -> np.ndarray:
    """What :func:`saliency_overlay` draws for saliencies 0 to 1 over a pixel of ``gray`` (0-1): the
    colour scale its figures show (gray at 0, the jet colour map blended in as the saliency grows).

    Returns
    -------
    numpy.ndarray
        RGB in [0, 1], shape (steps, 3).
    """
    return blend(np.full((steps, 1), gray), np.linspace(0.0, 1.0, steps), alpha)


def blend(gray: np.ndarray, saliency: np.ndarray, alpha: float) -> np.ndarray:
    """Gray levels ``gray`` (0-1, shape (..., 1)) with the jet colour of ``saliency`` (0-1, shape (...))
    weighted ``alpha * saliency`` on top: RGB in [0, 1], shape (..., 3)."""
    heat = matplotlib.colormaps["jet"](saliency)[..., :3]
    return (1 - alpha * saliency[..., None]) * gray + alpha * saliency[..., None] * heat


def saliency_overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = SALIENCY_ALPHA) -> np.ndarray:
    """An RGB uint8 image: the X-ray in gray with its saliency map in the jet colour map on top.

    Parameters
    ----------
    image : numpy.ndarray
        The image, shape (height, width, channels), raw 0-255; its channels are averaged to gray.
    saliency : numpy.ndarray
        The saliency map, shape (height, width), values in [0, 1].
    alpha : float, optional
        Weight of the colour map where the saliency is 1 (default 0.45).

    Returns
    -------
    numpy.ndarray
        The overlay, shape (height, width, 3), dtype uint8.
    """
    gray = image.mean(axis=-1, keepdims=True) / 255.0
    return (np.clip(blend(gray, saliency, alpha), 0, 1) * 255).astype(np.uint8)


def saliency_grid(
    batch: np.ndarray,
    maps: np.ndarray,
    table: pd.DataFrame,
    box: slice,
    title: str,
    lungs: np.ndarray | None = None,
) -> Figure:
    """Overlays in one row per class, each titled actual -> predicted and its share inside the lungs,
    the lungs drawn (the image's real lung mask outlined, else the lung box, labelled), and the
    colour scale on the right.

    Parameters
    ----------
    batch : numpy.ndarray
        The images, shape (n, height, width, 3), raw 0-255 RGB.
    maps : numpy.ndarray
        Their saliency maps, shape (n, height, width), values in [0, 1].
    table : pandas.DataFrame
        One row per image, index matching ``batch``: ``class``, ``predicted``, ``lung_box_share``
        and, with ``lungs``, ``region`` (``mask`` or ``box``) and ``lung_share``; NaN shown as ``-``.
    box : slice
        Rows (and columns) of the lung box, drawn as a dashed white square, in pixels.
    title : str
        The figure's title.
    lungs : numpy.ndarray or None, optional
        Each image's real lung mask, bool (n, height, width), outlined where ``region`` is ``mask``.

    Returns
    -------
    matplotlib.figure.Figure
        The closed figure, ready to save.
    """
    classes = list(dict.fromkeys(table["class"]))
    columns = int(table.groupby("class").size().max())
    figure, axes = plt.subplots(len(classes), columns, figsize=(2.4 * columns, 2.6 * len(classes)), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row_index, name in enumerate(classes):
        for column, index in enumerate(table.index[table["class"] == name]):
            axis = axes[row_index, column]
            axis.imshow(saliency_overlay(batch[index], maps[index]))
            if lungs is not None and table.loc[index, "region"] == "mask":
                axis.contour(lungs[index], levels=[0.5], colors="white", linestyles="--", linewidths=1)
                where, share = "in lungs (mask)", table.loc[index, "lung_share"]
            else:
                _lung_box(axis, box)
                where, share = "in lung box", table.loc[index, "lung_box_share"]
            axis.set_title(
                f"{name} -> {table.loc[index, 'predicted']}\n{where}: {'-' if np.isnan(share) else f'{share:.2f}'}",
                fontsize=8,
            )
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 0.9, 1))
    scale = figure.add_axes((0.92, 0.15, 0.015, 0.7))
    colours = ScalarMappable(Normalize(0, 1), ListedColormap(saliency_colours()))
    figure.colorbar(colours, cax=scale, label="Grad-CAM over mid-gray (each map scaled to its maximum)")
    plt.close(figure)
    return figure


def _lung_box(axis, box: slice) -> None:
    """The lung box on one overlay: a dashed white square, labelled."""
    side = box.stop - box.start
    axis.add_patch(
        Rectangle((box.start, box.start), side, side, fill=False, edgecolor="white", linestyle="--", linewidth=1)
    )
    label = axis.text(box.start + 1, box.start + 1, "lung box", color="white", fontsize=8, va="top")
    label.set_path_effects([patheffects.withStroke(linewidth=2, foreground="black")])
