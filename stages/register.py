"""DVC stages `register@<backbone>` and `register_finetuned`: one saved model assessed and registered.

Assesses the model on the validation split (temperature scaling, the operating point for
positive_class, the statistics that rank the models) and its shortcut audit against the release
gate, then logs it as the servable pyfunc, carrying all of that, into the run that trained it and
registers it as a version of cxr-<task>; writes what was registered and assessed. A change to how
models are served reruns these stages, never training.
"""

import json

import pandas as pd

from cxr.core import tracking
from cxr.core.config import load
from cxr.core.outputs import write_json
from cxr.core.stage import arguments, run
from cxr.learn.model_files import load_model
from cxr.serve.register import assess, example_image, register


def main() -> None:
    args = arguments(__doc__, "split", "external", "model", "audit", "out")
    config = load()
    tracking.require_tracking_store()
    split = pd.read_csv(args.split)
    model, spec = load_model(args.model)
    assessment = assess(model, spec, split, pd.read_csv(args.external), json.loads(args.audit.read_text()), config)
    record = register(args.model, spec, config.task, example_image(split), assessment)
    write_json(args.out, record)
    gate = assessment["release"]["summary"]
    print(f"{args.model}: temperature {assessment['calibration']['temperature']:.3f}; release gate {gate}")
    if record["registered_model"]:
        print(f"{args.model}: registered as a version of {record['registered_model']}")


if __name__ == "__main__":
    run(main)
