"""DVC stage `filter_pa`: keep the configured views and modalities of the catalog."""

from cxr.core.config import load
from cxr.core.outputs import write_csv, write_json
from cxr.core.stage import arguments, run
from cxr.data import catalog
from cxr.data.expectations import filter_expectations
from cxr.data.validation import Table, validate


def main() -> None:
    args = arguments(__doc__, "catalog", "filtered", "report", "validation")
    rules = load().filter
    kept, report = catalog.filter_views(catalog.read(args.catalog), rules)
    expectations = filter_expectations(rules.views, rules.modalities, rules.missing_view)
    validate("filter_pa", [Table("catalog_pa", kept, expectations)], args.validation)
    write_json(args.report, report)
    write_csv(args.filtered, kept)
    print(f"filter_pa: kept {report['images_kept']} of {report['images_in']} images -> {args.filtered}")


if __name__ == "__main__":
    run(main)
