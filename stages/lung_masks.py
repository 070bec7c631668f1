"""DVC stage `lung_masks`: real lung masks for the images that have one (V7 Labs' outlines of the
COVID collection, the download_masks stage's), joined to the split's and the external set's images
by file name.

Writes --out: masks/<k>.png (8-bit, 255 inside the lungs, at each image's upright size), index.csv
(image_id, mask, lung_share, rescaled) and report.json (outlines read, joined, and what found no
partner on either side). The shortcut audit reads the masks wherever an image has one.
"""

import pandas as pd

from cxr.core.config import load
from cxr.core.outputs import staged_directory, write_csv, write_json
from cxr.core.stage import arguments, run
from cxr.data.sources import lung_masks, params_of


def main() -> None:
    args = arguments(__doc__, "raw", "split", "external", "out")
    config = load()
    annotates = params_of(lung_masks.NAME, config).annotates
    outlines = lung_masks.read_outlines(args.raw)
    rows = pd.concat([pd.read_csv(args.split), pd.read_csv(args.external)], ignore_index=True)
    with staged_directory(args.out) as staging:
        index, report = lung_masks.join(rows, outlines, annotates, staging)
        write_csv(staging / "index.csv", index)
        write_json(staging / "report.json", report)
    print(
        f"lung_masks: {report['joined']} of {report['images_of_source']} {annotates} images have a real lung mask "
        f"({report['images_without_outline']} without an outline; {report['outlines_without_image']} outlines "
        f"name no image here) -> {args.out}"
    )


if __name__ == "__main__":
    run(main)
