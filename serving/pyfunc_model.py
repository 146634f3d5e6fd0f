"""The pyfunc model file logged with every persuade model (MLflow "models from code").

MLflow runs this file when it loads the model, instead of unpickling an object.
"""

import mlflow

from serving.flavor import PersuadePyfunc

mlflow.models.set_model(PersuadePyfunc())
