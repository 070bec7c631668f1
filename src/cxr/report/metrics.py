"""The metric registry: every test statistic cxr reports, with its name, label and meaning, and
where it is shown. One list drives the comparison table, the headline (``headline.json``, the
pipeline's parent run), the registry version tags and the model card.

Vocabulary: the clinical terms, as a clinician-researcher reads them and as TRIPOD+AI and CLAIM
report them: **sensitivity** (what machine learning calls recall: the share of a class's images
the model assigns to it), **specificity**, **PPV** (precision) and **NPV**. The keys are the same
words (``sensitivity_COVID``), so a column of ``dvc exp show`` reads as the model card does.

Adding a metric: compute it where its kind is computed (:func:`cxr.report.evaluation.headline`
for one computed from the predicted classes, which the patient bootstrap then gives an interval;
:func:`cxr.report.comparison.calibration_on_test` for one computed from the probabilities), then
add its :class:`Metric` here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One statistic. ``key`` and ``label`` hold ``{cls}`` when there is one per class; the flags say
    where it is shown: ``table`` a column of comparison.md, ``card`` a row of the model card,
    ``lead`` in headline.json and the parent run (per-class ones for the positive class only), ``tag``
    a tag of the registered version."""

    key: str
    label: str
    definition: str
    table: bool = False
    card: bool = False
    lead: bool = False
    tag: bool = False

    def expand(self, classes: list[str]) -> list[tuple[str, str]]:
        """``(key, label)`` pairs: one per class of ``classes`` when the metric is per class."""
        if "{cls}" not in self.key:
            return [(self.key, self.label)]
        return [(self.key.format(cls=name), self.label.format(cls=name)) for name in classes]


METRICS = (
    Metric(
        "accuracy",
        "accuracy",
        "share of test images whose predicted class is the true one",
        table=True,
        card=True,
        lead=True,
        tag=True,
    ),
    Metric(
        "macro_f1",
        "macro F1",
        "unweighted mean over the classes of F1, the harmonic mean of sensitivity and PPV",
        table=True,
        card=True,
        lead=True,
        tag=True,
    ),
    Metric(
        "balanced_accuracy",
        "balanced accuracy",
        "mean sensitivity over the classes present in the test split; chance is 1/classes",
        card=True,
    ),
    Metric(
        "sensitivity_{cls}",
        "sensitivity {cls}",
        "share of the class's test images the model assigns to it (recall)",
        table=True,
        card=True,
        lead=True,
    ),
    Metric(
        "specificity_{cls}",
        "specificity {cls}",
        "share of the other classes' test images the model does not assign to the class",
        lead=True,
    ),
    Metric(
        "ece",
        "ECE",
        "expected calibration error of the calibrated probabilities: top-label, 15 equal-width bins",
        tag=True,
    ),
    Metric("brier", "Brier score", "mean summed squared error of the calibrated probabilities (0 to 2)", tag=True),
)


def shown(where: str, classes: list[str]) -> list[tuple[str, str]]:
    """``(key, label)`` of every metric whose flag ``where`` (``table``, ``card``, ``lead``, ``tag``) is
    set, in registry order, per-class ones expanded over ``classes``."""
    return [pair for metric in METRICS if getattr(metric, where) for pair in metric.expand(classes)]
