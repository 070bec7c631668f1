"""Offline rendering of DVC's plot specs."""

from cxr import plots


def test_page_renders_vega_lite_to_inline_svg_without_a_cdn():
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5}]},
        "mark": "line",
        "encoding": {"x": {"field": "epoch", "type": "quantitative"}, "y": {"field": "loss", "type": "quantitative"}},
    }
    html = plots.page(
        {"reports/train/curves/loss/vgg16.csv": [{"type": "vega", "revisions": ["workspace"], "content": spec}]},
        "dvc plots show",
    )
    assert html.count("<svg") == 1 and "http" not in html.replace("http://www.w3.org", "")
    assert "<h2>reports/train/curves/loss</h2>" in html and "vgg16.csv (workspace)" in html
