"""Near-duplicate radiographs: the detector on the generator's planted copies, the split and the
external set as a firewall, conflicting labels, and the vectorised scan against a plain loop."""

import numpy as np
import pandas as pd
import pytest
from conftest import make_config

from cxr.data import catalog, duplicates
from cxr.data.duplicates import DuplicateError, fingerprint, hash_words, near_pairs
from cxr.data.expectations import firewall_table, split_tables
from cxr.data.sources import download_source
from cxr.data.sources.synthetic import COPY_CHANGES
from cxr.data.split import external_test_set, make_split
from cxr.data.validation import DataValidationError, validate

# Patients of the COVID collection's stand-in past synthetic.patients: the shared radiographs,
# each as an original (odd offset) and a copy (even offset) under a second patient id.
PLANTED = len(COPY_CHANGES)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Training sources (raw) and the external source, generated at test size, and their catalogs."""
    config = make_config({"synthetic": {"near_duplicates": PLANTED}})
    raw, external = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("external")
    for name in config.sources.use:
        download_source(name, config, raw)
    download_source("actualmed", config, external)
    merged, report = catalog.build(config, raw)
    outside, _ = catalog.build(config, external, names=["actualmed"])
    return config, merged, report, outside


def planted_pairs(config, merged) -> list[list[str]]:
    """The planted original-copy pairs of the COVID collection, by their patient ids."""
    first = config.synthetic.patients["covid_chestxray"]
    pairs = []
    for index in range(PLANTED):
        ids = [f"covid_chestxray:{first + 2 * index + offset}" for offset in (1, 2)]
        pairs.append(sorted(merged.loc[merged["patient_id"].isin(ids), "image_id"]))
    return pairs


def test_every_planted_copy_is_grouped_and_no_distinct_images_are(sources):
    config, merged, report, _ = sources
    groups = {tuple(group["images"]): group for group in report["duplicate_groups"]}
    for change, pair in zip(COPY_CHANGES, planted_pairs(config, merged)):
        assert tuple(pair) in groups, f"the {change} copy was not grouped with its original"
        assert len(groups[tuple(pair)]["patient_ids"]) == 2
        assert merged.loc[merged["image_id"].isin(pair), "duplicate_group"].nunique() == 1
    planted = {tuple(pair) for pair in planted_pairs(config, merged)}
    for images, group in groups.items():
        if images not in planted:  # the Kermany stand-in's byte-identical files, as upstream
            assert len({merged.set_index("image_id").loc[image, "sha256"] for image in images}) == 1, group
    # Distinct images of one patient (1-3 drawings each) never share a group.
    several = merged[merged.groupby("patient_id")["image_id"].transform("size") > 1]
    assert len(several) > 40
    assert (several.groupby("patient_id")["duplicate_group"].nunique() == several.groupby("patient_id").size()).all()


def test_each_change_stays_within_the_confirm_threshold_and_distinct_drawings_do_not(sources):
    config, merged, _, _ = sources
    rules = config.duplicates
    pairs = near_pairs(merged, None, rules)
    linked = {tuple(sorted((merged["image_id"][a], merged["image_id"][b]))) for a, b in zip(pairs.left, pairs.right)}
    assert {tuple(pair) for pair in planted_pairs(config, merged)} <= linked
    # The nearest two distinct drawings of the catalog are further apart than any planted copy.
    words = {column: hash_words(merged[column]) for column in ("phash_256", "dhash_256")}
    distinct = merged["sha256"].to_numpy()
    planted = {image for pair in planted_pairs(config, merged) for image in pair}
    keep = ~merged["image_id"].isin(planted).to_numpy() & ~pd.Series(distinct).duplicated(keep=False).to_numpy()
    nearest = min(
        max(
            duplicates.distances(words["phash_256"][a], words["phash_256"][b]),
            duplicates.distances(words["dhash_256"][a], words["dhash_256"][b]),
        )
        for a in np.nonzero(keep)[0]
        for b in np.nonzero(keep)[0]
        if a < b
    )
    assert nearest > rules.confirm_bits


def test_the_split_never_separates_a_group(sources, tmp_path):
    config, merged, _, _ = sources
    kept, _ = catalog.filter_views(merged, config.filter)
    planted = planted_pairs(config, merged)
    for seed in range(6):
        seeded = make_config({"split": {"seed": seed}})
        split, _ = make_split(kept, seeded, "catalog")
        assert (split.groupby("duplicate_group")["split"].nunique() == 1).all()
        for pair in planted:
            assert split.loc[split["image_id"].isin(pair), "split"].nunique() == 1
        validate(
            "split",
            split_tables(split, seeded.class_names(), seeded.split.fractions, seeded.split.tolerance),
            tmp_path / f"split{seed}.json",
        )


def test_a_group_across_two_splits_fails_validation(sources, tmp_path):
    config, merged, _, _ = sources
    kept, _ = catalog.filter_views(merged, config.filter)
    split, _ = make_split(kept, config, "catalog")
    pair = planted_pairs(config, merged)[1]
    leaked = split.copy()
    original = leaked["image_id"] == pair[0]
    leaked.loc[original, "split"] = "test" if leaked.loc[original, "split"].iloc[0] != "test" else "train"
    with pytest.raises(DataValidationError, match=r"duplicate_groups: no duplicate group in two splits"):
        validate(
            "split",
            split_tables(leaked, config.class_names(), config.split.fractions, config.split.tolerance),
            tmp_path / "split.json",
        )


def test_the_external_set_loses_its_copies_of_split_images(sources, tmp_path):
    config, merged, _, outside = sources
    kept, _ = catalog.filter_views(merged, config.filter)
    split, _ = make_split(kept, config, "catalog")
    external_kept, _ = catalog.filter_views(outside, config.filter)
    external, report = external_test_set(external_kept, config, split, origin="data/external")
    dropped = pd.DataFrame(report["duplicates_of_split_images"])
    assert len(dropped) == PLANTED and dropped["image_id"].str.startswith("actualmed/").all()
    originals = {image for pair in planted_pairs(config, merged) for image in pair}
    assert set(dropped["duplicate_of"]) <= originals
    assert not external["image_id"].isin(dropped["image_id"]).any()
    validate("external", [firewall_table(split, external, config.duplicates)], tmp_path / "external.json")
    # Without the drop, the firewall check names the leak.
    leaky = pd.concat([external, external_kept[external_kept["image_id"].isin(dropped["image_id"])]])
    with pytest.raises(DataValidationError, match="no duplicate group spans the split and the external set"):
        validate("external", [firewall_table(split, leaky, config.duplicates)], tmp_path / "leaky.json")


def conflicting_catalog(merged: pd.DataFrame, config) -> tuple[pd.DataFrame, str]:
    """The merged catalog with one planted copy relabelled, as when two collections disagree."""
    copy = planted_pairs(config, merged)[0][1]
    return merged.assign(label=merged["label"].where(merged["image_id"] != copy, "NORMAL")), copy


@pytest.mark.parametrize("action", ["report", "drop", "error"])
def test_a_group_with_conflicting_labels_is_reported_dropped_or_refused(sources, action):
    config, merged, _, _ = sources
    relabelled, copy = conflicting_catalog(merged, config)
    rules = make_config({"duplicates": {"conflicting_labels": action}}).duplicates
    relabelled["duplicate_group"], groups = duplicates.group(relabelled, rules)
    [conflict] = [group for group in groups if group["conflicting_labels"]]
    assert copy in conflict["images"] and conflict["labels"] == ["COVID", "NORMAL"]
    if action == "error":
        with pytest.raises(
            DuplicateError,
            match=rf"1 duplicate group\(s\) whose images carry different labels: "
            rf"{conflict['group']}",
        ):
            duplicates.settle_conflicts(relabelled, groups, rules, "sources")
        return
    settled, summary = duplicates.settle_conflicts(relabelled, groups, rules, "sources")
    assert summary["conflicting_groups"] == [conflict["group"]]
    assert summary["dropped_images"] == (2 if action == "drop" else 0)
    assert len(settled) == len(relabelled) - summary["dropped_images"]


def test_the_vectorised_scan_finds_what_a_plain_loop_finds(sources, monkeypatch):
    config, merged, _, outside = sources
    loose = make_config({"duplicates": {"candidate_bits": 14, "confirm_bits": 60}}).duplicates
    monkeypatch.setattr(duplicates, "SCAN_BLOCK", 7)  # many blocks, and pairs across their edges
    found = near_pairs(merged, None, loose)
    words = {column: [int(value, 16) for value in merged[column]] for column in ("phash_64", "phash_256", "dhash_256")}

    def bits(column, a, b):
        return (words[column][a] ^ words[column][b]).bit_count()

    expected = {
        (a, b)
        for a in range(len(merged))
        for b in range(a + 1, len(merged))
        if bits("phash_64", a, b) <= 14 and bits("phash_256", a, b) <= 60 and bits("dhash_256", a, b) <= 60
    }
    assert len(expected) > 50
    assert set(zip(found.left.tolist(), found.right.tolist())) == expected
    across = near_pairs(merged, outside, config.duplicates)
    # Each Actualmed copy is the same radiograph as the COVID collection's original and its copy.
    assert len(across) == 2 * PLANTED and len(set(across.right.tolist())) == PLANTED


def test_fingerprint_ignores_grey_conversion_and_tells_drawings_apart(chest):
    grey = fingerprint(chest)
    rgb = fingerprint(np.repeat(chest[..., None], 3, axis=-1))
    assert grey == rgb and len(grey["phash_64"]) == 16 and len(grey["phash_256"]) == len(grey["dhash_256"]) == 64
    flipped = fingerprint(chest[:, ::-1])
    assert (int(grey["phash_256"], 16) ^ int(flipped["phash_256"], 16)).bit_count() > 40
