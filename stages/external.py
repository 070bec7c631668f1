"""DVC stage `external`: the external test set (sources.external) -> data/processed/external.csv.

The same reading, label mapping, validation and view filter as the training data; images in
the task's classes only; a file identical to one in the split is dropped.
"""

from pathlib import Path

import pandas as pd

from cxr import catalog
from cxr.config import load
from cxr.outputs import write_csv, write_json
from cxr.split import external_test_set
from cxr.stage import run
from cxr.validation import Table, catalog_expectations, validate

EXTERNAL_RAW = Path("data/external")
SPLIT = Path("data/processed/split.csv")
EXTERNAL = Path("data/processed/external.csv")
REPORT = Path("reports/data/external.json")
VALIDATION = Path("reports/validation/external.json")


def main() -> None:
    config = load()
    table, report = catalog.build(config, EXTERNAL_RAW, names=config.sources.external)
    expectations = catalog_expectations(sorted(set(config.labels.values())), config.sources.external)
    validate("external", [Table("catalog", table, expectations)], VALIDATION)
    kept, filtered = catalog.filter_views(table, config.filter)
    external, selected = external_test_set(kept, config, pd.read_csv(SPLIT), origin=str(EXTERNAL_RAW))
    write_json(REPORT, {"catalog": report, "filter": filtered, "test_set": selected})
    write_csv(EXTERNAL, external)
    print(f"external: {len(external)} images from {config.sources.external} -> {EXTERNAL}")


if __name__ == "__main__":
    run(main)
