"""DVC plots that open without network: the same Vega-Lite specs, rendered to inline SVG.

``dvc plots show`` writes an HTML page that loads Vega from a CDN, so it stays blank offline.
``cxr-plots show`` (or ``cxr-plots diff main``) asks DVC for the filled-in specs
(``--json``), renders each one locally with vl-convert, and writes one self-contained page.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import subprocess
import sys
from pathlib import Path

import vl_convert


def dvc_plots(arguments: list[str]) -> dict:
    """``dvc plots <arguments> --json``: plot path -> list of rendered items (vega or image)."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", *arguments, "--json"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"error: dvc plots {' '.join(arguments)} failed:\n{result.stderr}")
    return json.loads(result.stdout)["data"]


def page(plots: dict, title: str) -> str:
    """A self-contained HTML page with every plot, grouped by folder."""
    sections: dict[str, list[str]] = {}
    for path, items in sorted(plots.items()):
        for item in items:
            if item["type"] == "vega":
                body = vl_convert.vegalite_to_svg(item["content"])
            else:
                encoded = base64.b64encode(Path(item["url"]).read_bytes()).decode()
                body = f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(path)}">'
            revisions = ", ".join(item.get("revisions", []))
            sections.setdefault(str(Path(path).parent), []).append(
                f"<figure>{body}<figcaption>{html.escape(path)} ({html.escape(revisions)})</figcaption></figure>"
            )
    parts = [
        f"<h2>{html.escape(folder)}</h2><div class='grid'>{''.join(figures)}</div>"
        for folder, figures in sections.items()
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        ".grid{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:small}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cxr-plots", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default="dvc_plots", help="folder for offline.html (default dvc_plots)")
    parser.add_argument(
        "dvc_arguments",
        nargs="*",
        default=["show"],
        help="what follows `dvc plots`: show [targets] or diff [revisions]",
    )
    arguments = parser.parse_args(argv)
    plots = dvc_plots(arguments.dvc_arguments or ["show"])
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "offline.html"
    target.write_text(page(plots, "dvc plots " + " ".join(arguments.dvc_arguments or ["show"])))
    print(target.resolve().as_uri())
