"""Great Expectations Data Docs that open offline, and cxr's own index of a stage's validations.

GX's Data Docs load jQuery, Bootstrap, bootstrap-table and Font Awesome from CDNs: offline, their
index lists nothing (its tables are filled in by scripts) and the Status column of a validation
page is blank (its marks are Font Awesome glyphs). GX's pages are kept for the full detail, with
their status marks given as text and their logo taken from the site's own ``static/`` folder;
``index.html`` is cxr's: every validated table and every expectation with pass/fail and what was
observed, plain HTML rendered with Jinja2 (autoescaped), no script and nothing fetched.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import jinja2
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

from cxr.core.outputs import staged_directory

# Data Docs record no time (the same data must give the same bytes): results are filed under this.
DOCS_RUN_TIME = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
FIXED_TIME = DOCS_RUN_TIME.strftime("%Y%m%dT%H%M%S.%fZ")
GX_TIMESTAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GX_LOGO = re.compile(r'src="https://great-expectations-web-assets[^"]*/logo-long\.png[^"]*"')
# Font Awesome's status glyphs as text, so GX's Status column reads without its CDN stylesheet.
STATUS_STYLE = (
    "<style>.fas.fa-check-circle::before{content:'\\2714';color:#1e7e34;font-style:normal}"
    ".fas.fa-times::before{content:'\\2718';color:#bd2130;font-style:normal}"
    ".fas.fa-exclamation-triangle::before{content:'\\26A0';color:#d39e00;font-style:normal}</style>"
)
INDEX_NAME = "index.html"
GX_INDEX_NAME = "gx-index.html"

INDEX = jinja2.Environment(autoescape=True, keep_trailing_newline=True).from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ stage }}: data validation</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#212529}
table{border-collapse:collapse;width:100%;margin-bottom:2em}
th,td{border:1px solid #dee2e6;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#f1f3f5}.passed{color:#1e7e34}.failed{color:#bd2130;font-weight:bold}
code{font-size:.9em;word-break:break-all}
</style></head>
<body>
<h1>{{ stage }}: data validation <span class="{{ status(success) }}">{{ verdict(success) }}</span></h1>
<p>{{ tables | length }} table(s) validated by the <code>{{ stage }}</code> stage with Great Expectations:
{{ met }} of {{ total }} expectations met. The same data gives the same bytes, so no run time is recorded.
Full results: <code>{{ stage }}.json</code> beside this folder, and each table's Great Expectations page
(linked below; it reads offline, unstyled). Great Expectations' own <a href="{{ gx_index }}">index</a>
lists nothing offline: its tables are built by scripts from CDNs.</p>
<h2>Validations</h2>
<table><tr><th>Status</th><th>Table</th><th>Expectations met</th><th>Great Expectations page</th></tr>
{% for table in tables %}<tr><td class="{{ status(table.success) }}">{{ verdict(table.success) }}</td>
<td><a href="#{{ table.name }}">{{ table.name }}</a></td><td>{{ table.met }} of {{ table.rows | length }}</td>
<td>{% if table.page %}<a href="{{ table.page }}">{{ table.suite }}</a>{% else %}{{ table.suite }}{% endif %}</td></tr>
{% endfor %}</table>
{% for table in tables %}<h2 id="{{ table.name }}">{{ table.name }}
<span class="{{ status(table.success) }}">{{ mark(table.success) }}</span></h2>
<table><tr><th>Status</th><th>Expectation</th><th>Column</th><th>Observed</th></tr>
{% for row in table.rows %}<tr><td class="{{ status(row.success) }}">{{ verdict(row.success) }}</td>
<td>{{ row.expectation }}<br><code>{{ row.type }}</code></td><td>{{ row.column }}</td><td>{{ row.observed }}</td></tr>
{% endfor %}</table>
{% endfor %}</body></html>
"""
)
INDEX.globals.update(
    status=lambda success: "passed" if success else "failed",
    mark=lambda success: "\u2714" if success else "\u2718",
    verdict=lambda success: "\u2714 passed" if success else "\u2718 failed",
)


def write_data_docs(context, stage: str, results: dict, summaries: dict, folder: Path) -> Path:
    """The Data Docs of one stage's validations in ``folder``: cxr's ``index.html`` and GX's site.

    Parameters
    ----------
    context : great_expectations.data_context.AbstractDataContext
        The context the suites were validated in.
    stage : str
        The stage's name (suites are ``<stage>.<table>``).
    results : dict
        Table name -> GX ``ExpectationSuiteValidationResult``, for GX's pages.
    summaries : dict
        Table name -> the same result as a JSON dict (what ``<stage>.json`` holds), for the index.
    folder : Path
        Where the site goes; replaced as a whole (staged, then renamed).

    Returns
    -------
    Path
        ``folder``. GX stamps pages with the render time and random element ids: both are replaced
        by fixed values, so the same results give the same bytes. Its onboarding animations (3 MB of
        GIFs no page shows) are left out.
    """
    with staged_directory(folder) as staging:
        context.add_data_docs_site(
            site_name=stage,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(staging.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        run_id = RunIdentifier(run_name=stage, run_time=DOCS_RUN_TIME)
        for name, result in results.items():
            key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=f"{stage}.{name}"), run_id, name)
            # Pages name the run from the result's meta: the stage, and no time (none is recorded).
            result.meta["run_id"] = {"run_name": stage, "run_time": ""}
            context.validation_results_store.set(key, result)
        context.build_data_docs(site_names=[stage])
        for animation in staging.glob("static/images/*.gif"):
            animation.unlink()
        for page in staging.rglob("*.html"):
            page.write_text(offline_page(page.read_text("utf-8"), page.relative_to(staging)), "utf-8")
        (staging / INDEX_NAME).rename(staging / GX_INDEX_NAME)
        pages = {name: validation_page(staging, stage, name) for name in summaries}
        (staging / INDEX_NAME).write_text(index_page(stage, summaries, pages), "utf-8")
    return folder


def offline_page(html: str, path: Path) -> str:
    """One GX page made reproducible and readable offline: fixed time and ids, "not recorded" where GX
    would print ``__none__`` (the run time), status marks as text, the logo from the site's
    ``static/images`` (``path`` is the page's place in the site). Its CDN links stay: online, they
    style the page."""
    html = numbered_ids(GX_TIMESTAMP.sub(FIXED_TIME, html)).replace("__none__", "not recorded")
    logo = "../" * (len(path.parts) - 1) + "static/images/logo-long.png"
    return GX_LOGO.sub(f'src="{logo}"', html).replace("</head>", STATUS_STYLE + "</head>", 1)


def numbered_ids(html: str) -> str:
    """``html`` with each distinct uuid replaced by ``id<n>``, numbered in order of first appearance."""
    ids: dict[str, str] = {}
    return UUID.sub(lambda found: ids.setdefault(found[0], f"id{len(ids) + 1}"), html)


def index_page(stage: str, summaries: dict, pages: dict) -> str:
    """cxr's index of a stage's validations (HTML, no script, nothing fetched).

    ``summaries`` maps table name -> validation result JSON (GX's ``to_json_dict()``); ``pages`` maps
    table name -> the relative link of GX's page for it (or None)."""
    tables = []
    for name, summary in summaries.items():
        rows = [
            {
                "success": item["success"],
                "expectation": item["expectation_config"].get("description") or item["expectation_config"]["type"],
                "type": item["expectation_config"]["type"],
                "column": item["expectation_config"]["kwargs"].get("column", ""),
                "observed": describe_outcome(item),
            }
            for item in summary["results"]
        ]
        tables.append(
            {
                "name": name,
                "suite": f"{stage}.{name}",
                "success": summary["success"],
                "met": sum(row["success"] for row in rows),
                "rows": rows,
                "page": pages.get(name),
            }
        )
    met = sum(table["met"] for table in tables)
    total = sum(len(table["rows"]) for table in tables)
    success = all(table["success"] for table in tables)
    return INDEX.render(stage=stage, tables=tables, met=met, total=total, success=success, gx_index=GX_INDEX_NAME)


def describe_outcome(item: dict) -> str:
    """What one expectation's result (GX JSON) observed, in one line: an exception's message, the
    unexpected count with up to five examples, GX's details, or the observed value."""
    outcome = item.get("result") or {}
    errors = exception_messages(item.get("exception_info"))
    if errors:
        return f"could not be evaluated: {errors[0]}"
    if "unexpected_count" in outcome:
        examples = outcome.get("partial_unexpected_list", [])[:5]
        return f"{outcome['unexpected_count']} unexpected value(s)" + (f", e.g. {examples}" if examples else "")
    if "details" in outcome:
        return f"{outcome['details']}"
    return f"observed {outcome.get('observed_value')!r}"


def exception_messages(info) -> list[str]:
    """Great Expectations nests exceptions per metric; return their messages."""
    if not info:
        return []
    entries = [info] if "raised_exception" in info else list(info.values())
    return [
        entry.get("exception_message") or "error"
        for entry in entries
        if isinstance(entry, dict) and entry.get("raised_exception")
    ]


def validation_page(site: Path, stage: str, name: str) -> str | None:
    """The relative link (from the site's folder ``site``) of GX's validation page for table ``name``
    of ``stage``, or None when GX wrote none."""
    page = Path("validations", stage, name, stage, FIXED_TIME, f"{name}.html")
    return page.as_posix() if (site / page).is_file() else None
