"""The registered model's code, as MLflow logs it ("models from code": no pickled object).

MLflow runs this file when it loads a registered version; it names the model class and nothing
more. Never import it: :func:`cxr.serve.register.log_servable` passes its path.
"""

from mlflow.models import set_model

from cxr.serve.pyfunc import XrayClassifier

set_model(XrayClassifier())
