"""Great Expectations suites run inside the data stages.

Each stage validates the table it is about to write (and small tables derived from it, e.g.
one row per patient and split) before writing anything. A failure stops the stage with one
line per failed expectation; the full Great Expectations result goes to
``reports/validation/<stage>.json`` either way, and its static HTML Data Docs (every expectation
with its observed value) to ``reports/validation/<stage>/index.html``.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.core.errors import CxrError
from cxr.core.outputs import staged_directory, write_json

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402  (reads GX_ANALYTICS_ENABLED at import)
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (  # noqa: E402
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

logging.getLogger("great_expectations").setLevel(logging.WARNING)


class DataValidationError(CxrError):
    """An expectation failed; the message lists each failure and where the full result is."""


@dataclass(frozen=True)
class Table:
    """A frame to validate, the expectations it must meet, and what it is called in messages.

    Parameters
    ----------
    name : str
        The table's name in messages and in the validation report.
    frame : pandas.DataFrame
        The rows to validate.
    expectations : list of great_expectations.expectations.Expectation
        What the rows must meet.
    """

    name: str
    frame: pd.DataFrame
    expectations: list[gxe.Expectation]


def validate(stage: str, tables: list[Table], report: Path, hint: str = "") -> dict:
    """Validate every table; write the full result and its Data Docs; raise on any failure.

    The full result goes to ``report`` and its Data Docs to the folder of the same name (without the
    suffix); a failure's message ends with ``hint`` (what the stage knows that may explain it) after
    the list of failures.

    Parameters
    ----------
    stage : str
        The stage's name, used for the suites and in messages.
    tables : list of Table
        The frames and their expectations.
    report : Path
        The JSON file of the result.
    hint : str, optional
        Appended to a failure's message.

    Returns
    -------
    dict
        ``stage``, ``success`` (True), ``failures`` (empty) and ``results`` (per table, the
        validation result without run-specific values).

    Raises
    ------
    DataValidationError
        When any expectation fails; the message lists every failure.
    OSError
        When the report cannot be written.
    """
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        ),
    )
    datasource = context.data_sources.add_pandas(stage)
    results, validated, failures = {}, {}, []
    for table in tables:
        batch = (
            datasource.add_dataframe_asset(table.name)
            .add_batch_definition_whole_dataframe("whole")
            .get_batch(batch_parameters={"dataframe": table.frame})
        )
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{stage}.{table.name}", expectations=[copy.copy(item) for item in table.expectations]
            )
        )
        result = batch.validate(suite)
        validated[table.name] = result
        results[table.name] = reproducible_result(result.to_json_dict())
        failures += [f"{table.name}: {_describe(item)}" for item in result.results if not item.success]
    summary = {"stage": stage, "success": not failures, "failures": failures, "results": results}
    write_json(report, summary)
    docs = write_data_docs(context, stage, validated, report.with_suffix(""))
    if failures:
        raise DataValidationError(
            f"{stage}: {len(failures)} data expectation(s) failed (full result in {report}, "
            f"{docs / 'index.html'}):\n  - " + "\n  - ".join(failures) + (f"\n{hint}" if hint else "")
        )
    return summary


# Data Docs record no time (the same data must give the same bytes): results are filed under this.
DOCS_RUN_TIME = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
GX_TIMESTAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def write_data_docs(context, stage: str, results: dict, folder: Path) -> Path:
    """The static HTML Data Docs of ``results`` (table name -> GX validation result) in ``folder``
    (``index.html``, one page per suite and per result). GX stamps pages with the render time and
    random element ids: both are replaced by fixed values so the same results give the same bytes.
    Its onboarding animations (3 MB of GIFs no page shows) are left out."""
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
            context.validation_results_store.set(key, result)
        context.build_data_docs(site_names=[stage])
        for animation in staging.glob("static/images/*.gif"):
            animation.unlink()
        fixed_time = DOCS_RUN_TIME.strftime("%Y%m%dT%H%M%S.%fZ")
        for page in staging.rglob("*.html"):
            page.write_text(numbered_ids(GX_TIMESTAMP.sub(fixed_time, page.read_text())))
    return folder


def numbered_ids(html: str) -> str:
    """``html`` with each distinct uuid replaced by ``id<n>``, numbered in order of first appearance."""
    ids: dict[str, str] = {}
    return UUID.sub(lambda found: ids.setdefault(found[0], f"id{len(ids) + 1}"), html)


def reproducible_result(result: dict) -> dict:
    """A validation result without what GX makes up per run: the time it stamps on the batch
    (``ge_load_time``) and the random id (uuid4) it gives each expectation when a suite is added,
    replaced by the expectation's position. The same data must give the same report bytes, or DVC
    sees a changed output."""
    result.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    for index, item in enumerate(result.get("results", []), start=1):
        if "id" in item.get("expectation_config", {}):
            item["expectation_config"]["id"] = f"expectation-{index}"
    return result


def _describe(result) -> str:
    config = result.expectation_config
    what = config.description or config.type
    column = config.kwargs.get("column")
    where = f" [{column}]" if column else ""
    outcome = result.result or {}
    errors = _exception_messages(result.exception_info)
    if errors:
        detail = f"could not be evaluated: {errors[0]}"
    elif "unexpected_count" in outcome:
        examples = outcome.get("partial_unexpected_list", [])[:5]
        detail = f"{outcome['unexpected_count']} unexpected value(s), e.g. {examples}"
    elif "details" in outcome:
        detail = f"{outcome['details']}"
    else:
        detail = f"observed {outcome.get('observed_value')!r}"
    return f"{what}{where}: {detail}"


def _exception_messages(info) -> list[str]:
    """Great Expectations nests exceptions per metric; return their messages."""
    if not info:
        return []
    entries = [info] if "raised_exception" in info else list(info.values())
    return [
        entry.get("exception_message") or "error"
        for entry in entries
        if isinstance(entry, dict) and entry.get("raised_exception")
    ]
