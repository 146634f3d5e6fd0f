"""The ``persuade`` MLflow flavor (serving/flavor.py): save, log and load in MLflow's own shape.

A saved model records the ``persuade`` flavor in ``MLmodel`` (bundle path, format version)
and a ``python_function`` entry whose loader is ``serving.flavor``; save, log and load are
symmetric; every loader (``load_scoring_model``, ``download_bundle``, the child proof of
``serving.model_check``) finds the bundle through the flavor configuration; the pyfunc and
``mlflow.pyfunc.spark_udf`` give the scores of ``persuade score``; a version logged the old
way (a pyfunc "model from code" with the bundle at ``artifacts/bundle``) still loads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from serving.batch import score_file
from serving.bundle_checksums import CHECKSUMS, verify_checksums, write_checksums
from serving.flavor import FLAVOR_NAME, FORMAT_VERSION, PACKAGE_ROOT, bundle_path, load_model, log_model, save_model
from serving.model_check import prove_in_child
from serving.probe_scores import PROBE_SCORES, record_probe_scores
from serving.pyfunc_model import predict_scores
from serving.registry import download_bundle, load_scoring_model
from training.tracking import configure, ensure_experiment

FLAVOR_TEST = "persuade-flavor-test"
LEGACY_TEST = "persuade-legacy-test"
TOL = 1e-12

# the "model from code" file every version was logged with before the flavor (serving/pyfunc_model.py then)
LEGACY_PYFUNC_FILE = '''"""The pyfunc model file logged with every persuade model (MLflow "models from code")."""

import mlflow

from serving.flavor import PersuadePyfunc

mlflow.models.set_model(PersuadePyfunc())
'''


def assert_same_scores(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    assert list(got.columns) == list(expected.columns)
    for col in expected.columns:
        if pd.api.types.is_float_dtype(expected[col]):
            assert np.allclose(got[col].to_numpy(float), expected[col].to_numpy(float), atol=TOL, equal_nan=True), col
        else:
            assert (got[col].astype(object).fillna("-") == expected[col].astype(object).fillna("-")).all(), col


def mlmodel(path) -> dict:
    return yaml.safe_load((path / "MLmodel").read_text())


@pytest.fixture(scope="module")
def saved(small_model, tmp_path_factory):
    model, example = small_model
    path = tmp_path_factory.mktemp("flavor") / "model"
    save_model(model, path, input_example=example)
    return path


def test_save_model_records_the_persuade_flavor_and_the_pyfunc(saved, small_model):
    model, example = small_model
    flavors = mlmodel(saved)["flavors"]
    assert flavors[FLAVOR_NAME]["bundle"] == "bundle"
    assert flavors[FLAVOR_NAME]["format_version"] == FORMAT_VERSION
    assert flavors[FLAVOR_NAME]["bundle_format"] == "persuade-scoring-model/1"
    assert flavors["python_function"]["loader_module"] == "serving.flavor"
    assert flavors["python_function"]["data"] == "bundle" and flavors["python_function"]["code"] == "code"
    for name in ("bundle/manifest.json", f"bundle/{CHECKSUMS}", f"bundle/{PROBE_SCORES}", "code/serving/flavor.py",
                 "code/features/pipeline.py", "requirements.txt", "conda.yaml", "python_env.yaml",
                 "input_example.json"):
        assert (saved / name).is_file(), name
    assert not (saved / "code" / "training").exists()  # serving never imports training
    assert verify_checksums(saved / "bundle") is True
    signature = Model.load(str(saved)).signature
    assert "phone" in signature.inputs.input_names() and signature.params is not None
    assert_same_scores(load_model(str(saved)).score(example), model.score(example))


# the distributions the pyfunc's own code (features, serving) imports, found in a fresh interpreter
IMPORTED_DISTRIBUTIONS = """
import ast, json, sys
import serving.flavor
from importlib.metadata import packages_distributions
found = packages_distributions()
ours = [m for m in list(sys.modules) if m.split(".")[0] in ("features", "serving")]
names = set()
for module in ours:
    for node in ast.walk(ast.parse(open(sys.modules[module].__file__).read())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
print(json.dumps(sorted({d for n in names if n not in ("features", "serving") for d in found.get(n, [])})))
"""


def test_the_requirements_name_every_package_the_pyfunc_code_imports(saved):
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IMPORTED_DISTRIBUTIONS], capture_output=True, text=True,
                          cwd=PACKAGE_ROOT, timeout=300, check=True)
    imported = {name.lower().replace("_", "-") for name in json.loads(done.stdout)} - {"mlflow-skinny",
                                                                                      "mlflow-tracing"}
    logged = {line.split("==")[0].lower().replace("_", "-")
              for line in (saved / "requirements.txt").read_text().splitlines() if "==" in line}
    assert imported <= logged, sorted(imported - logged)


def test_save_model_refuses_a_folder_that_is_not_empty(saved, small_model):
    with pytest.raises(MlflowException, match="already exists and is not empty"):
        save_model(small_model[0], saved)


def test_log_and_load_are_symmetric_through_the_registry(small_model, tmp_path):
    model, example = small_model
    configure()
    with mlflow.start_run(experiment_id=ensure_experiment(mlflow.MlflowClient(), "flavor-test")) as run:
        info = log_model(model, input_example=example, registered_model_name=FLAVOR_TEST)
    version = str(info.registered_model_version)
    uri = f"models:/{FLAVOR_TEST}/{version}"
    assert mlflow.models.get_model_info(uri).flavors[FLAVOR_NAME]["bundle"] == "bundle"
    assert_same_scores(load_model(uri, tmp_path / "a").score(example), model.score(example))
    assert_same_scores(load_model(f"runs:/{run.info.run_id}/model").score(example), model.score(example))
    _, ref = load_scoring_model(uri, tmp_path / "b")
    assert (ref.name, ref.version, ref.run_id) == (FLAVOR_TEST, version, run.info.run_id)
    bundle, _ = download_bundle(uri, tmp_path / "c")
    assert bundle == tmp_path / "c" / "bundle"
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.metadata.flavors["python_function"]["loader_module"] == "serving.flavor"
    assert_same_scores(pyfunc.predict(example), predict_scores(model, example))
    scratch = tmp_path / "tmp"  # a load without a folder downloads to one the process removes on exit
    scratch.mkdir()
    subprocess.run([sys.executable, "-c", "import sys; from serving.flavor import load_model; load_model(sys.argv[1])",
                    f"runs:/{run.info.run_id}/model"], cwd=PACKAGE_ROOT, env={**os.environ, "TMPDIR": str(scratch)},
                   check=True)
    assert not list(scratch.iterdir())


def test_every_loader_finds_the_bundle_through_the_flavor_configuration(small_model, tmp_path):
    """A bundle at a path only the flavor configuration names: registry, download and the child proof find it."""
    model, example = small_model
    path = tmp_path / "model"
    save_model(model, path, input_example=example)
    (path / "bundle").rename(path / "scoring")
    conf = mlmodel(path)
    conf["flavors"][FLAVOR_NAME]["bundle"] = conf["flavors"]["python_function"]["data"] = "scoring"
    (path / "MLmodel").write_text(yaml.safe_dump(conf))
    assert bundle_path(path) == path / "scoring"
    assert download_bundle(str(path))[0] == path / "scoring"
    assert_same_scores(load_scoring_model(str(path))[0].score(example), model.score(example))
    prove_in_child(path)  # the child loads the model folder through the flavor
    assert_same_scores(mlflow.pyfunc.load_model(str(path)).predict(example), predict_scores(model, example))


def test_a_newer_format_and_another_flavor_are_refused_by_name(saved, tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    conf = mlmodel(saved)
    conf["flavors"][FLAVOR_NAME]["format_version"] = FORMAT_VERSION + 1
    (newer / "MLmodel").write_text(yaml.safe_dump(conf))
    with pytest.raises(ValueError, match=f"persuade flavor format {FORMAT_VERSION + 1}.*upgrade persuade"):
        load_model(str(newer))
    other = tmp_path / "other"
    other.mkdir()
    Model(flavors={"sklearn": {"pickled_model": "model.pkl"}}).save(str(other / "MLmodel"))
    with pytest.raises(ValueError, match=r"without the 'persuade' flavor \(its flavors: sklearn\)"):
        load_scoring_model(str(other))
    with pytest.raises(ValueError, match="neither an MLflow model with the 'persuade' flavor nor a persuade bundle"):
        load_model(str(tmp_path))


def test_a_version_logged_before_the_flavor_still_loads(small_model, tmp_path):
    """As every version was logged before the flavor: a pyfunc from code, the bundle as its artifact."""
    model, example = small_model
    bundle = model.save(tmp_path / "bundle")
    record_probe_scores(model, bundle)
    write_checksums(bundle)
    code = tmp_path / "pyfunc_model.py"
    code.write_text(LEGACY_PYFUNC_FILE)
    configure()
    with mlflow.start_run(experiment_id=ensure_experiment(mlflow.MlflowClient(), "flavor-test")):
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts={"bundle": str(bundle)},
                                       input_example=example, pip_requirements=["mlflow"],
                                       code_paths=[str(PACKAGE_ROOT / "features"), str(PACKAGE_ROOT / "serving")],
                                       registered_model_name=LEGACY_TEST)
    uri = f"models:/{LEGACY_TEST}/{info.registered_model_version}"
    assert FLAVOR_NAME not in mlflow.models.get_model_info(uri).flavors  # no flavor entry: the fallback
    found, ref = download_bundle(uri, tmp_path / "download")
    assert found == tmp_path / "download" / "artifacts" / "bundle" and ref.name == LEGACY_TEST
    prove_in_child(found)
    assert_same_scores(load_scoring_model(uri)[0].score(example), model.score(example))
    assert_same_scores(mlflow.pyfunc.load_model(uri).predict(example), predict_scores(model, example))


def test_the_pyfunc_and_spark_udf_give_the_scores_of_persuade_score(small_model, small_campaign, spark, tmp_path):
    """``mlflow.pyfunc.load_model(uri).predict`` and ``mlflow.pyfunc.spark_udf`` against ``score_file``.

    ``persuade score`` without consent options writes every arm's uplift; the pyfunc without a
    consent table applies the consent rules (fail closed: texts need consent, phone calls a
    known local time), so each arm's uplift is the same where the pyfunc allows the arm and
    missing where it does not. Spark's UDF gives the pyfunc's rows exactly.
    """
    model, _ = small_model
    voters = small_campaign.voter_file.head(300)[["voter_id", *model.input_features]]
    voters.to_parquet(tmp_path / "voters.parquet", index=False)
    score_file(model, tmp_path / "voters.parquet", tmp_path / "scores.parquet")  # what `persuade score` writes
    cli = pd.read_parquet(tmp_path / "scores.parquet").sort_values("voter_id").reset_index(drop=True)
    path = tmp_path / "model"
    save_model(model, path, input_example=voters.head(5))
    predicted = mlflow.pyfunc.load_model(str(path)).predict(voters).sort_values("voter_id").reset_index(drop=True)
    assert_same_scores(predicted[["voter_id", "turnout"]], cli[["voter_id", "turnout"]])
    for arm in model.arms:
        allowed = predicted[f"eligible_{arm.slug}"].to_numpy(bool)
        column = f"uplift_{arm.slug}"
        assert predicted.loc[~allowed, column].isna().all(), arm.label
        assert np.allclose(predicted.loc[allowed, column], cli.loc[allowed, column], atol=TOL), arm.label
    assert predicted[[f"eligible_{a.slug}" for a in model.arms]].any().sum() >= 2  # the check compares something
    columns = ["voter_id", "turnout", *[c for a in model.arms for c in (f"uplift_{a.slug}", f"eligible_{a.slug}")],
               "best_arm", "best_uplift"]
    kinds = {"voter_id": "string", "best_arm": "string", **{f"eligible_{a.slug}": "boolean" for a in model.arms}}
    frame = spark.createDataFrame(voters)
    udf = mlflow.pyfunc.spark_udf(spark, str(path), env_manager="local",
                                  result_type=", ".join(f"{c} {kinds.get(c, 'double')}" for c in columns))
    out = frame.withColumn("scores", udf(*[frame[c] for c in voters.columns])).select("scores.*").toPandas()
    assert_same_scores(out.sort_values("voter_id").reset_index(drop=True)[columns], predicted[columns])
