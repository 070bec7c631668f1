"""DVC stages `register@<backbone>` and `register_finetuned`: one saved model registered in MLflow.

Logs the model folder as the servable pyfunc into the run that trained it and registers it as
cxr-<task>-<backbone> (cxr-<task> for the fine-tuned model); writes what was registered. A change
to how models are served reruns these stages, never training.
"""

import pandas as pd

from cxr.core import tracking
from cxr.core.config import load
from cxr.core.outputs import write_json
from cxr.core.stage import arguments, run
from cxr.learn.model_files import read_spec
from cxr.serve.register import example_image, register


def main() -> None:
    args = arguments(__doc__, "split", "model", "out")
    config = load()
    tracking.require_tracking_store()
    example = example_image(pd.read_csv(args.split))
    record = register(args.model, read_spec(args.model), config.task, example)
    write_json(args.out, record)
    if record["registered_model"]:
        print(f"{args.model}: registered as {record['registered_model']}")


if __name__ == "__main__":
    run(main)
