"""The registered pyfunc's code file: MLflow "models from code" runs this at load time.

Logging the model as this file (``mlflow.pyfunc.log_model(python_model=<this path>)``) means
the registry holds no serialised ``PythonModel`` object: loading imports the installed ``recsys`` and
builds :class:`recsys.pyfunc_model.RecsysModel`, which reads the bundle folder (data only).
"""

from mlflow.models import set_model

from recsys.pyfunc_model import RecsysModel

set_model(RecsysModel())
