"""Great Expectations suites run inside the data stages.

Each stage validates the table it is about to write (and small tables derived from it, e.g.
one row per patient and split) before writing anything. A failure stops the stage with one
line per failed expectation; the full Great Expectations result goes to
``reports/validation/<stage>.json`` either way, and its Data Docs to ``reports/validation/<stage>/``:
``index.html`` lists every expectation with pass/fail and its observed value, offline
(:mod:`cxr.data.data_docs`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.core.errors import CxrError
from cxr.core.outputs import write_json

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402  (reads GX_ANALYTICS_ENABLED at import)
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from cxr.data.data_docs import describe_outcome, write_data_docs  # noqa: E402

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
        failures += [
            f"{table.name}: {_describe(item)}" for item in results[table.name]["results"] if not item["success"]
        ]
    summary = {"stage": stage, "success": not failures, "failures": failures, "results": results}
    write_json(report, summary)
    docs = write_data_docs(context, stage, validated, results, report.with_suffix(""))
    if failures:
        raise DataValidationError(
            f"{stage}: {len(failures)} data expectation(s) failed (full result in {report}, "
            f"{docs / 'index.html'}):\n  - " + "\n  - ".join(failures) + (f"\n{hint}" if hint else "")
        )
    return summary


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


def _describe(item: dict) -> str:
    """One failed expectation (GX JSON) in one line: what it expects, its column, what was observed."""
    config = item["expectation_config"]
    column = config["kwargs"].get("column")
    where = f" [{column}]" if column else ""
    return f"{config.get('description') or config['type']}{where}: {describe_outcome(item)}"
