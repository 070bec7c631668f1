"""Applying a model to image files: each file read as training read it (:mod:`cxr.serve.reading`), then
one row of calibrated probabilities, the decision at the operating point and any warning per file.
``cxr-predict`` and the registered (served) model both use it.

Every failure stays in its row: whatever reading a file raises (a format cxr does not read, a
decompression bomb, a broken DICOM window, pydicom or TensorFlow errors, memory) becomes a one-line
``error`` naming the file, and the other files go on. Unexpected errors are also logged with their
traceback (the server's log), never returned.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from cxr.core.errors import one_line
from cxr.core.spec import ModelSpec
from cxr.data.image_files import DEFAULT_LIMITS, Limits
from cxr.report.calibration import apply_temperature
from cxr.serve.reading import ModelInput, Source, read_source, row_error, source_name

LOG = logging.getLogger(__name__)
# Images are decoded this many at a time (two chunks at most held), so a large folder never holds
# all its pixels at once.
CHUNK = 128
# Files read at once by cxr-predict (TensorFlow's and pydicom's decoders release the GIL): two, so its
# peak memory is at most twice one file's (docs/PERFORMANCE.md, "At the input limits"); a server bounds
# its decodes by its own decode_slots.
READERS = 2


# Called with the model, the names and model inputs of a batch, their calibrated probabilities and
# previews (cxr.serve.explain.Explainer); returns what it wrote for each image, in order:
# (model, names, pixels, probabilities, previews) -> per image: (overlay path or "", a note or "").
Explain = Callable[[object, list[str], np.ndarray, np.ndarray, list[np.ndarray]], list[tuple[str, str]]]


@dataclass(frozen=True)
class Decision:
    """What a registered model adds to its probabilities.

    The ``temperature`` fitted on the validation split (1: none), the ``threshold`` on the calibrated
    p(``positive_class``) chosen on it (None: none), and ``release``, the release gate's one-line
    result for this model. A model folder, which no gate has judged, gets the defaults.

    Parameters
    ----------
    temperature : float, optional
        The temperature that divides the logits (temperature scaling, Guo et al. 2017); 1: none.
    positive_class : str or None, optional
        The class the threshold is on.
    threshold : float or None, optional
        Decide ``positive_class`` when its calibrated probability is at least this (0-1); None: no
        decision.
    release : str, optional
        The release gate's one-line result.

    References
    ----------
    Guo, C., Pleiss, G., Sun, Y. & Weinberger, K. Q. (2017). On Calibration of Modern Neural
    Networks. ICML 2017.
    """

    temperature: float = 1.0
    positive_class: str | None = None
    threshold: float | None = None
    release: str = "not judged (a model folder: only registered versions pass the release gate)"

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, classes) softmax output -> the same after temperature scaling."""
        return probabilities if self.temperature == 1.0 else apply_temperature(probabilities, self.temperature)

    def label(self, probabilities: np.ndarray, classes: list[str]) -> str:
        """``<positive_class>`` or ``not <positive_class>`` at the threshold; "" without one."""
        if self.threshold is None or self.positive_class not in classes:
            return ""
        score = probabilities[classes.index(self.positive_class)]
        return self.positive_class if score >= self.threshold else f"not {self.positive_class}"


def predict_sources(
    model,
    spec: ModelSpec,
    sources: list[Source],
    *,
    batch_size: int,
    views: list[str] | None = None,
    progress: bool = False,
    explain: Explain | None = None,
    limits: Limits = DEFAULT_LIMITS,
    decode_slots: threading.Semaphore | None = None,
    decision: Decision = Decision(),
) -> pd.DataFrame:
    """Classify images: one row per source, in order.

    A row holds path (its name), predicted class, ``p_<class>`` per class of ``spec`` (calibrated by
    ``decision``; None where the row failed), ``decision`` (at the operating point), ``release`` (the
    model's release gate result), warning, error, and overlay (what ``explain`` wrote for it, when
    given). A source that cannot be read gets its one-line error in its row; the others go on, and a
    batch the model fails on gets the failure in each of its rows. ``decode_slots`` bounds how many
    files are decoded at once across threads (a server's memory).

    Parameters
    ----------
    model : keras.Model
        The classifier (or anything with Keras' ``predict_on_batch``).
    spec : ModelSpec
        What it is (classes, input size).
    sources : list of Source
        Image files (Path), ``(name, bytes)`` pairs or :class:`Unreadable` inputs.
    batch_size : int
        Images per model call.
    views : list of str or None, optional
        Overrides the views the model records it was trained on (None: ``spec.views``); a DICOM of
        another view gets a warning.
    progress : bool, optional
        Show a progress bar on stderr.
    explain : callable or None, optional
        Writes an overlay per image from ``(model, names, pixels, calibrated probabilities, previews)``
        and returns ``(overlay, note)`` pairs; None: no overlay column.
    limits : Limits, optional
        File and image size limits.
    decode_slots : threading.Semaphore or None, optional
        Bounds concurrent decodes; None: unbounded.
    decision : Decision, optional
        Temperature, threshold and release gate result (default: none).

    Returns
    -------
    pandas.DataFrame
        Columns ``path``, ``predicted``, ``p_<class>``..., ``decision``, ``release``, ``warning``,
        ``error`` and, with ``explain``, ``overlay``.
    """
    classes, rows = spec.classes, []
    columns = ["path", "predicted", *[f"p_{name}" for name in classes], "decision", "release", "warning", "error"]
    columns += ["overlay"] if explain is not None else []
    bar = tqdm(total=len(sources), unit="image", disable=not progress, file=sys.stderr)

    def read(source: Source) -> ModelInput | str:
        try:
            with decode_slots or nullcontext():
                return read_source(source, spec, views, limits, preview=explain is not None)
        except Exception as exc:  # noqa: BLE001 - every failure (MemoryError too) is its row's answer
            return row_error(source, exc)

    # Files are read READERS at a time, the next chunk while the model runs on this one.
    pool = ThreadPoolExecutor(READERS) if len(sources) > 1 else None
    submit = pool.submit if pool is not None else lambda function, source: _Done(function(source))
    try:
        pending = [submit(read, source) for source in sources[:CHUNK]]
        for start in range(0, len(sources), CHUNK):
            chunk, decoded = sources[start : start + CHUNK], []
            for future in pending:
                decoded.append(future.result())
                bar.update(1)
            pending = [submit(read, source) for source in sources[start + CHUNK : start + 2 * CHUNK]]
            good = [index for index, item in enumerate(decoded) if isinstance(item, ModelInput)]
            probabilities, overlays, overlay_failure = {}, {}, ""
            if good:
                pixels = np.stack([decoded[index].pixels for index in good])
                try:
                    probabilities = dict(zip(good, decision.calibrated(_predict(model, pixels, batch_size))))
                except Exception as exc:  # noqa: BLE001 - memory, a broken model: the batch's rows say so
                    LOG.error("the model failed on a batch of %d images", len(good), exc_info=exc)
                    for index in good:
                        decoded[index] = (
                            f"{source_name(chunk[index])}: the model failed on the batch of this file "
                            f"({type(exc).__name__}: {one_line(exc)})"
                        )
                    good = []
            if explain is not None and good:
                try:
                    written = explain(
                        model,
                        [source_name(chunk[index]) for index in good],
                        pixels,
                        np.stack([probabilities[index] for index in good]),
                        [decoded[index].preview for index in good],
                    )
                    overlays = dict(zip(good, written))
                except Exception as exc:  # noqa: BLE001 - the prediction stands; the row says the overlay failed
                    LOG.error("Grad-CAM overlays failed", exc_info=exc)
                    overlay_failure = f"Grad-CAM overlay not written ({type(exc).__name__}: {one_line(exc)})"
            for index, source in enumerate(chunk):
                row = {
                    "path": source_name(source),
                    "predicted": None,
                    **{f"p_{name}": None for name in classes},
                    "decision": "",
                    "release": decision.release,
                    "warning": "",
                    "error": "",
                } | ({"overlay": ""} if explain is not None else {})
                if index in probabilities:
                    row["predicted"] = classes[int(np.argmax(probabilities[index]))]
                    row.update({f"p_{name}": float(value) for name, value in zip(classes, probabilities[index])})
                    row["decision"] = decision.label(probabilities[index], classes)
                    overlay, note = overlays.get(index, ("", ""))
                    row["warning"] = "; ".join(part for part in (decoded[index].warning, overlay_failure, note) if part)
                    if explain is not None:
                        row["overlay"] = overlay
                else:
                    row["error"] = decoded[index]
                rows.append(row)
    finally:  # an exception or Ctrl-C leaves no read running
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class _Done:
    """A result already in hand, read like a future's (a single file is read without a thread)."""

    value: object

    def result(self) -> object:
        return self.value


def _predict(model, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """``model``'s output for (n, size, size, 3) ``pixels``, ``batch_size`` images per call of its
    compiled predict step (``predict_on_batch``: no ``tf.data`` pipeline built per call)."""
    return np.concatenate(
        [model.predict_on_batch(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
    )
