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


def test_the_index_lists_every_validation_and_expectation_offline(tmp_path):
    """cxr's index.html: each table and each expectation with pass/fail and what was observed, with no
    script and nothing from the network; GX's pages (whose CDN links style them online) show their
    status marks as text, the logo from the site, and no made-up run time."""
    catalog = pd.DataFrame({"image_id": ["a", "b", "b"], "width": [10, 20, 30]})
    patients = pd.DataFrame({"patient_id": ["p1", "p2"]})
    tables = [
        Table(
            "catalog",
            catalog,
            [
                gxe.ExpectColumnValuesToBeUnique(column="image_id", description="image ids are unique"),
                gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1, description="image opened"),
            ],
        ),
        Table("patients", patients, [gxe.ExpectColumnValuesToNotBeNull(column="patient_id", description="known")]),
    ]
    report = tmp_path / "merge.json"
    with pytest.raises(DataValidationError, match=r"index\.html"):
        validate("merge", tables, report)
    docs = report.with_suffix("")
    index = (docs / "index.html").read_text()
    rows = re.findall(r"<tr><td class=\"(passed|failed)\">[^<]*</td>\n<td>([^<]*)<br>", index)
    assert rows == [("failed", "image ids are unique"), ("passed", "image opened"), ("passed", "known")]
    assert "2 unexpected value(s), e.g. [&#39;b&#39;, &#39;b&#39;]" in index
    assert "2 of 3 expectations met" in index and "\u2718 failed" in index
    [catalog_page] = re.findall(r'<a href="(validations/merge/catalog/[^"]+)">merge.catalog</a>', index)
    assert (docs / catalog_page).is_file() and (docs / "gx-index.html").is_file()
    for page in docs.rglob("*.html"):
        html = page.read_text()
        fetched = re.findall(r'<(?:script|img)[^>]*\bsrc="(https?:[^"]*)"', html)
        assert page.name != "index.html" or not re.search(r"<script|https?://", html), page
        assert all("great-expectations-web-assets" not in url for url in fetched), page
        if page.name != "index.html":
            assert "fa-check-circle::before" in html, page
    logo = re.search(r'src="([^"]*logo-long\.png)"', catalog_page_html := (docs / catalog_page).read_text())
    assert (docs / catalog_page).parent.joinpath(logo[1]).resolve().is_file()
    assert "fa-times" in catalog_page_html
    assert "__none__" not in catalog_page_html and "not recorded" in catalog_page_html
