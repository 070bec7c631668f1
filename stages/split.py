"""DVC stage `split`: the filtered catalog -> patient-grouped, stratified train/val/test split."""

from cxr.core.config import load
from cxr.core.outputs import write_csv, write_json
from cxr.core.stage import arguments, run
from cxr.data import catalog
from cxr.data.expectations import split_tables
from cxr.data.split import left_out_note, make_split
from cxr.data.validation import validate


def main() -> None:
    args = arguments(__doc__, "filtered", "split", "report", "validation")
    config = load()
    table, report = make_split(catalog.read(args.filtered), config, origin=str(args.filtered))
    tables = split_tables(table, config.class_names(), config.split.fractions, config.split.tolerance)
    hint = left_out_note(report["labels_left_out_by_task"], config.task)
    validate("split", tables, args.validation, hint=hint)
    write_json(args.report, report)
    write_csv(args.split, table)
    print(f"split: {report['images']} images -> {args.split}")


if __name__ == "__main__":
    run(main)
