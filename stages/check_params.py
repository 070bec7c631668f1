"""DVC stage `check_params`: check the whole params.yaml before any other stage runs.

Every other stage depends on this stage's output, a file whose content never changes. A params error
(`train.epochs: -5`, an unknown backbone, a label typo, a bad source section) therefore stops
`dvc repro`, `dvc repro <stage>` and `dvc exp run` here, before DVC removes any other stage's
outputs; a valid change leaves the file's hash as it was, so only the stages that read the changed
keys rerun.
"""

from cxr.core.config import load, unrestricted
from cxr.core.outputs import write_text
from cxr.core.stage import arguments, run
from cxr.data.sources import check_sources

CHECKED = "params.yaml passed cxr's parameter checks.\n"


def main() -> None:
    args = arguments(__doc__, "params", "checked")
    check_sources(unrestricted(load(args.params)))  # every key: this stage checks the whole file
    write_text(args.checked, CHECKED)
    print(f"check_params: {args.params} is valid -> {args.checked}")


if __name__ == "__main__":
    run(main, restorable=False)  # its one output is a constant line: rerunning restores it
