"""DVC stage `merge`: every configured source -> the catalog, plus the data report."""

from cxr.core.config import load
from cxr.core.outputs import write_csv, write_json
from cxr.core.stage import arguments, run
from cxr.data import catalog
from cxr.data.expectations import catalog_expectations
from cxr.data.validation import Table, validate


def main() -> None:
    args = arguments(__doc__, "raw", "catalog", "report", "validation")
    config = load()
    table, report = catalog.build(config, args.raw)
    expectations = catalog_expectations(config.label_names(), config.sources.use)
    validate("merge", [Table("catalog", table, expectations)], args.validation)
    write_json(args.report, report)
    write_csv(args.catalog, table)
    print(f"catalog: {len(table)} images from {config.sources.use} -> {args.catalog}")


if __name__ == "__main__":
    run(main)
