"""DVC stage `external`: the external sources (sources.external) -> a test set never trained on.

The same reading, label mapping, validation and view filter as the training data; images in
the task's classes only; an image that is the same radiograph as one in the split (identical
bytes or a near-duplicate) is dropped, and a Great Expectations check proves none is left.
"""

from cxr.core.config import load
from cxr.core.outputs import write_csv, write_json
from cxr.core.stage import arguments, run
from cxr.data import catalog
from cxr.data.expectations import catalog_expectations, firewall_table
from cxr.data.split import external_test_set
from cxr.data.validation import Table, validate


def main() -> None:
    args = arguments(__doc__, "raw", "split", "external", "report", "validation")
    config = load()
    table, report = catalog.build(config, args.raw, names=config.sources.external)
    split = catalog.read(args.split)
    kept, filtered = catalog.filter_views(table, config.filter)
    external, selected = external_test_set(kept, config, split, origin=str(args.raw))
    expectations = catalog_expectations(config.label_names(), config.sources.external)
    validate(
        "external",
        [Table("catalog", table, expectations), firewall_table(split, external, config.duplicates)],
        args.validation,
    )
    write_json(args.report, {"catalog": report, "filter": filtered, "test_set": selected})
    write_csv(args.external, external)
    print(f"external: {len(external)} images from {config.sources.external} -> {args.external}")


if __name__ == "__main__":
    run(main)
