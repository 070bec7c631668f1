"""DVC stage `merge`: every configured source -> data/interim/catalog.csv, plus the data report."""

from pathlib import Path

from cxr import catalog
from cxr.config import load
from cxr.outputs import write_csv, write_json
from cxr.stage import run
from cxr.validation import Table, catalog_expectations, validate

RAW = Path("data/raw")
CATALOG = Path("data/interim/catalog.csv")
REPORT = Path("reports/data/catalog.json")
VALIDATION = Path("reports/validation/merge.json")


def main() -> None:
    config = load()
    table, report = catalog.build(config, RAW)
    expectations = catalog_expectations(sorted(set(config.labels.values())), config.sources.use)
    validate("merge", [Table("catalog", table, expectations)], VALIDATION)
    write_json(REPORT, report)
    write_csv(CATALOG, table)
    print(f"catalog: {len(table)} images from {config.sources.use} -> {CATALOG}")


if __name__ == "__main__":
    run(main)
