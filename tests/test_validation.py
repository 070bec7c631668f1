"""Great Expectations results: the stage's one-line failures, its JSON report and its Data Docs."""

import re

import pandas as pd
import pytest

from cxr.data.validation import DataValidationError, Table, gxe, validate


def test_data_docs_show_every_expectation_and_repeat_byte_for_byte(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b", "b"], "width": [10, 20, 30]})
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="image_id", description="image ids are unique"),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1, description="image opened"),
    ]
    pages = []
    for run in ("first", "second"):
        report = tmp_path / run / "split.json"
        with pytest.raises(DataValidationError, match=r"image ids are unique \[image_id\]: 2 unexpected value"):
            validate("split", [Table("catalog", frame, expectations)], report)
        docs = report.with_suffix("")
        assert (docs / "index.html").is_file() and report.is_file()
        [page] = docs.glob("validations/split/catalog/**/*.html")
        pages.append({path.relative_to(docs): path.read_bytes() for path in docs.rglob("*") if path.is_file()})
        html = page.read_text()
        for description in ("image ids are unique", "image opened"):
            assert description in html
        assert re.search(r"unexpected_count|2 unexpected|unexpected values", html)
    assert pages[0] == pages[1]
