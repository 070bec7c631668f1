"""DVC stage `filter_pa`: keep the views in filter.views -> data/interim/catalog_pa.csv."""

from pathlib import Path

from cxr import catalog
from cxr.config import load
from cxr.outputs import write_csv, write_json
from cxr.stage import run
from cxr.validation import Table, filter_expectations, validate

CATALOG = Path("data/interim/catalog.csv")
FILTERED = Path("data/interim/catalog_pa.csv")
REPORT = Path("reports/data/filter.json")
VALIDATION = Path("reports/validation/filter_pa.json")


def main() -> None:
    rules = load().filter
    kept, report = catalog.filter_views(catalog.read(CATALOG), rules)
    expectations = filter_expectations(rules.views, rules.modalities, rules.missing_view)
    validate("filter_pa", [Table("catalog_pa", kept, expectations)], VALIDATION)
    write_json(REPORT, report)
    write_csv(FILTERED, kept)
    print(f"filter_pa: kept {report['images_kept']} of {report['images_in']} images -> {FILTERED}")


if __name__ == "__main__":
    run(main)
