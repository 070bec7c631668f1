"""DVC stage `split`: patient-grouped, stratified train/val/test -> data/processed/split.csv."""

from pathlib import Path

from cxr import catalog
from cxr.config import load
from cxr.outputs import write_csv, write_json
from cxr.split import left_out_note, make_split
from cxr.stage import run
from cxr.validation import split_tables, validate

FILTERED = Path("data/interim/catalog_pa.csv")
SPLIT = Path("data/processed/split.csv")
REPORT = Path("reports/data/split.json")
VALIDATION = Path("reports/validation/split.json")


def main() -> None:
    config = load()
    table, report = make_split(catalog.read(FILTERED), config, origin=str(FILTERED))
    tables = split_tables(table, config.class_names(), config.split.fractions, config.split.tolerance)
    hint = left_out_note(report["labels_left_out_by_task"], config.task)
    validate("split", tables, VALIDATION, hint=hint)
    write_json(REPORT, report)
    write_csv(SPLIT, table)
    print(f"split: {report['images']} images -> {SPLIT}")


if __name__ == "__main__":
    run(main)
