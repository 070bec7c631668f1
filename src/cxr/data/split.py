"""Patient-grouped, class-stratified train/val/test split.

Images of one patient, and images that are the same radiograph (one ``duplicate_group``:
byte-identical or near-duplicate files, :mod:`cxr.data.duplicates`), always land in the same
split, so no patient and no copy of a radiograph is seen in training and again in testing. Groups are placed
greedily, largest first, into the split whose class counts they bring closest to the target
fractions; the order of equal-sized groups is shuffled by ``split.seed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cxr.core.config import Config
from cxr.core.errors import CxrError
from cxr.core.schema import SPLIT_NAMES, split_order, split_part
from cxr.data import duplicates


class SplitError(CxrError):
    """The filtered catalog cannot be split for the task (e.g. a class has no images)."""


def assign_classes(
    catalog: pd.DataFrame, config: Config, origin: str, every_class: bool = True
) -> tuple[pd.DataFrame, dict]:
    """Add the task's ``class`` column; rows whose label the task leaves out are dropped.

    With ``every_class`` (training data), a class left without images is an error.
    """
    class_of_label = {label: name for name, labels in config.task_classes().items() for label in labels}
    frame = catalog.assign(**{"class": catalog["label"].map(class_of_label)})
    left_out = frame[frame["class"].isna()]["label"].value_counts().to_dict()
    frame = frame.dropna(subset=["class"]).reset_index(drop=True)
    empty = [name for name in config.class_names() if not (frame["class"] == name).any()]
    if empty and every_class:
        raise SplitError(
            f"{origin}: class(es) {empty} of task {config.task!r} have no images after filtering "
            f"(filter.views={config.filter.views}, filter.modalities={config.filter.modalities}, "
            f"sources.use={config.sources.use}); every class needs images to train and test"
            + (f". {left_out_note(left_out, config.task)}" if left_out else "")
        )
    return frame, {"labels_left_out_by_task": left_out}


def left_out_note(left_out: dict[str, int], task: str) -> str:
    """Why a class may be empty or short: the labels the task's classes do not list, with counts.

    Parameters
    ----------
    left_out : dict of str to int
        Images per label left out.
    task : str
        The task.

    Returns
    -------
    str
        The note, or "" when nothing was left out.
    """
    if not left_out:
        return ""
    listed = ", ".join(f"{label!r} ({count} image(s))" for label, count in sorted(left_out.items()))
    return (
        f"Labels that no class of task {task!r} lists were left out: {listed}; if one of them belongs "
        f"to a class, map its finding to that class's label in `labels` or add it under classes.{task}"
    )


def source_quotas(counts: dict[str, int], limit: int) -> dict[str, int]:
    """How many images of each source one class keeps under ``limit``.

    Each source gets an even share of the limit; a source with fewer images than its share
    keeps them all and leaves the rest of its share to the others (water-filling). So a rare
    source (the COVID collection's 14 bacterial images beside Kermany's thousands) is never lost
    to the cap, and the shortcut audit can still compare sources within the class.
    """
    quotas, remaining = {}, limit
    pending = sorted(counts, key=lambda source: (counts[source], source))
    for position, source in enumerate(pending):
        quotas[source] = min(counts[source], remaining // (len(pending) - position))
        remaining -= quotas[source]
    return quotas


def cap_per_class(frame: pd.DataFrame, cap: int | dict[str, int] | None, seed: int) -> pd.DataFrame:
    """At most ``cap`` images per class (a number for all, or per class), sampled by ``seed``
    within each source as :func:`source_quotas` shares the cap out."""
    if cap is None:
        return frame
    parts = []
    for index, (name, rows) in enumerate(frame.groupby("class", sort=True)):
        limit = cap.get(name) if isinstance(cap, dict) else cap
        if limit is None or len(rows) <= limit:
            parts.append(rows)
            continue
        by_source = dict(list(rows.groupby("source", sort=True)))
        quotas = source_quotas({source: len(images) for source, images in by_source.items()}, limit)
        for position, (source, images) in enumerate(by_source.items()):
            parts.append(images.sample(n=quotas[source], random_state=np.random.default_rng([seed, index, position])))
    return pd.concat(parts).sort_values("image_id", ignore_index=True)


def group_ids(frame: pd.DataFrame) -> pd.Series:
    """One id per connected set of images linked by a shared patient or duplicate group: the
    union of patient and duplicate links (SciPy's ``connected_components`` on a graph whose
    nodes are the patients and the duplicate groups, one edge per image)."""
    patients, patient_codes = np.unique(frame["patient_id"].to_numpy(), return_inverse=True)
    _, group_codes = np.unique(frame["duplicate_group"].to_numpy(), return_inverse=True)
    nodes = len(patients) + group_codes.max(initial=-1) + 1
    graph = coo_matrix((np.ones(len(frame)), (patient_codes, len(patients) + group_codes)), shape=(nodes, nodes))
    _, component = connected_components(graph, directed=False)
    return pd.Series(component[patient_codes], index=frame.index).map(lambda node: f"g{node}")


def assign_splits(frame: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.Series:
    """The split of every row: grouped by :func:`group_ids`, stratified by ``class`` and ``source``.

    Stratifying by source too keeps each split's mix of sources within a class close to the
    whole's, so a source's few images of a class reach the test split as well.
    """
    strata = frame["class"] + " | " + frame["source"]
    groups = frame.assign(group=group_ids(frame), stratum=strata)
    counts = pd.crosstab(groups["group"], groups["stratum"]).reindex(columns=sorted(strata.unique()), fill_value=0)
    order = np.random.default_rng(seed).permutation(len(counts))
    counts = counts.iloc[order]
    counts = counts.iloc[np.argsort(-counts.sum(axis=1).to_numpy(), kind="stable")]

    names = list(SPLIT_NAMES)
    totals = counts.sum().to_numpy(dtype=float)
    target = np.outer([fractions[name] for name in names], totals)
    placed = np.zeros_like(target)
    choice = {}
    for group, row in zip(counts.index, counts.to_numpy(dtype=float)):
        before = ((placed - target) / totals) ** 2
        after = ((placed + row - target) / totals) ** 2
        best = int(np.argmin((after - before).sum(axis=1)))
        placed[best] += row
        choice[group] = names[best]
    return groups["group"].map(choice)


def source_confound(frame: pd.DataFrame) -> dict:
    """How much of the task the image's source alone solves.

    Returns the images per source and class, and the test accuracy of a rule that knows only
    the source: predict the class most common among that source's training images (versus
    predicting the most common training class for every image).
    """
    train, test = split_part(frame, "train"), split_part(frame, "test")
    majority = train["class"].value_counts().idxmax()
    rule = train.groupby("source")["class"].agg(lambda classes: classes.value_counts().idxmax())
    guess = test["source"].map(rule).fillna(majority)
    return {
        "images_per_source_class": pd.crosstab(frame["source"], frame["class"]).to_dict(orient="index"),
        "source_only_rule": rule.to_dict(),
        "source_only_accuracy": float((guess == test["class"]).mean()),
        "majority_class_accuracy": float((test["class"] == majority).mean()),
    }


def external_test_set(
    catalog: pd.DataFrame, config: Config, training: pd.DataFrame, origin: str
) -> tuple[pd.DataFrame, dict]:
    """External-source images in the task's classes, minus copies of any image of ``training`` (the split).

    Classes the external sources lack are simply absent; a byte-identical or near-duplicate copy of
    a split image (:func:`cxr.data.duplicates.spanning`) is dropped, counted and listed (report key
    ``duplicates_of_split_images``: ``[{"image_id", "duplicate_of"}]``), so the external test never
    scores a radiograph the model was trained, tuned or tested on. When the
    filter keeps no external image at all (a CT experiment, X-ray-only external sources), the
    set is empty and the report says why: there is then no external test, rather than a false one.

    Parameters
    ----------
    catalog : pandas.DataFrame
        The filtered catalog of the external sources.
    config : Config
        The configuration (``task``, ``classes``, ``duplicates``, ``sources.external``, ``filter``).
    training : pandas.DataFrame
        The split table (train, val and test images).
    origin : str
        What messages name as the data's origin (the catalog file).

    Returns
    -------
    frame : pandas.DataFrame
        The external test set, ``split`` = ``external``, in split-table column order.
    report : dict
        ``task``, ``labels_left_out_by_task``, ``duplicates_of_split_images``,
        ``images_per_source_class`` and ``patients``; for an empty set ``task``, ``images`` (0) and
        ``note``.

    Raises
    ------
    SplitError
        When images pass the filter but none is left in the task's classes.
    """
    if catalog.empty:
        note = (
            f"no image of the external sources {config.sources.external} passes the filter "
            f"(filter.modalities={config.filter.modalities}, filter.views={config.filter.views})"
        )
        empty = catalog.assign(**{"class": pd.Series(dtype=str), "split": pd.Series(dtype=str)})
        return split_order(empty), {"task": config.task, "images": 0, "note": note}
    frame, report = assign_classes(catalog, config, origin, every_class=False)
    copies = duplicates.spanning(training, frame, config.duplicates)
    seen = frame["image_id"].isin(copies["image_id"])
    frame = frame[~seen].reset_index(drop=True)
    if frame.empty:
        raise SplitError(f"{origin}: no external image is left in the classes of task {config.task!r}")
    frame["split"] = "external"
    frame = split_order(frame)
    report.update(
        {
            "task": config.task,
            "duplicates_of_split_images": copies[["image_id", "duplicate_of"]].to_dict(orient="records"),
            "images_per_source_class": pd.crosstab(frame["source"], frame["class"]).to_dict(orient="index"),
            "patients": int(frame["patient_id"].nunique()),
        }
    )
    return frame, report


def make_split(catalog: pd.DataFrame, config: Config, origin: str) -> tuple[pd.DataFrame, dict]:
    """The split table (image, patient, class, split, and the catalog columns it came with).

    Images get the task's class, are capped at ``split.max_per_class`` per class and assigned to
    train, val and test with ``split.seed``: images linked by a shared patient or duplicate group
    go to the same split, stratified by class and source.

    Parameters
    ----------
    catalog : pandas.DataFrame
        The filtered catalog.
    config : Config
        The configuration (``task``, ``classes``, ``split``).
    origin : str
        What messages name as the data's origin (the catalog file).

    Returns
    -------
    frame : pandas.DataFrame
        The split table, in split-table order.
    report : dict
        ``labels_left_out_by_task``, ``task``, ``images`` and ``patients`` (per split),
        ``images_per_class`` (``{split: {class: images}}``), ``images_per_split_source_class`` and
        ``source_confound`` (how much the source alone predicts the class).

    Raises
    ------
    SplitError
        When a class of the task has no images.
    """
    frame, report = assign_classes(catalog, config, origin)
    frame = cap_per_class(frame, config.split.max_per_class, config.split.seed)
    frame["split"] = assign_splits(frame, config.split.fractions, config.split.seed)
    frame = split_order(frame)
    counts = pd.crosstab(frame["split"], frame["class"]).reindex(index=list(SPLIT_NAMES), fill_value=0)
    report.update(
        {
            "task": config.task,
            "images": {name: int(counts.loc[name].sum()) for name in SPLIT_NAMES},
            "patients": {name: int(frame.loc[frame["split"] == name, "patient_id"].nunique()) for name in SPLIT_NAMES},
            "images_per_class": counts.to_dict(orient="index"),
            "images_per_split_source_class": images_per_split_source_class(frame, config.class_names()),
            "source_confound": source_confound(frame),
        }
    )
    return frame, report


def images_per_split_source_class(frame: pd.DataFrame, classes: list[str]) -> dict:
    """``{split: {source: {class: images}}}``, every split, source and class listed (zeros too)."""
    sources = sorted(frame["source"].unique())
    return {
        split: {
            source: {name: int(((rows["source"] == source) & (rows["class"] == name)).sum()) for name in classes}
            for source in sources
        }
        for split, rows in ((name, frame[frame["split"] == name]) for name in SPLIT_NAMES)
    }
