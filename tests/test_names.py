"""One name per concept: a params key is the MLflow param of the same dotted name, a final
metric is the MLflow metric and the report column of the same name."""
import numpy as np
import pandas as pd

from noisylabels import tracking
from noisylabels.engine import metrics
from noisylabels.engine.noise import RunLabels
from noisylabels.report import tables
from noisylabels.resolve import resolve_group

from conftest import TinyDataset


def _leaves(section: str, values: dict) -> dict:
    return tracking.flat({section: values})


def test_every_main_params_key_is_an_mlflow_param_of_the_same_name(params):
    run = resolve_group(params, "main").runs[0]
    logged = tracking.run_params(run)
    written = {**_leaves("model", params["model"]), **_leaves("loss", params["loss"]),
               **_leaves("procedure", params["procedure"]), **_leaves("train", params["train"]),
               "noise.type": params["noise"]["type"], "noise.rate": params["noise"]["rate"],
               "noise.draw": params["noise"]["draw"], "noise.val_fraction": params["noise"]["val_fraction"],
               "seed": params["noise"]["seeds"][0],
               "dataset": params["data"]["name"]}  # a group's data set: data.name in main, `dataset` in a group entry
    for key, value in written.items():
        assert key in logged, key
        assert logged[key] == str(value) or float(logged[key]) == float(value), (key, logged[key], value)


def test_a_table_methods_loss_is_logged_under_loss(params):
    run = resolve_group(params, "sce_table1-sl-digits").runs[0]
    logged = tracking.run_params(run)
    for key, value in params["sce_table1"]["digits"]["methods"]["sl"]["loss"].items():
        assert logged[f"loss.{key}"] == str(value)


def test_final_metrics_are_mlflow_metrics_and_report_columns(params):
    ds = TinyDataset(n_per_class=10)
    run = resolve_group(params, "main").runs[0]
    n = len(ds.train_labels)
    val = np.zeros(n, dtype=bool)
    val[::5] = True
    arrays = {"test_pred": np.zeros((2, len(ds.test_labels)), dtype=np.int16),
              "val_pred": np.zeros((2, int(val.sum())), dtype=np.int16), "train_pred": np.zeros(n - int(val.sum()))}
    record = metrics.run_record(arrays, ds, RunLabels(ds.train_labels, val, np.eye(10), 0.4))
    final = metrics.mlflow_metrics(record, ds.classes)
    tags = tracking.run_tags(run)
    row = {"group": "main", "table": "main", "dataset": "digits", "method": "sl", "setting": run.setting.name,
           "noise_type": tags["noise_type"], "noise_rate": float(tags["noise_rate"]), "seed": 0, "best_epoch": 1,
           **{m: 100 * record[m] for m in metrics.SEED_SUMMARY}}
    columns = tables.table_csv(tables.summarize(pd.DataFrame([row]))).columns
    for m in metrics.SEED_SUMMARY:
        assert m in final and f"{m}_mean" in columns, m
    assert {"noise_type", "noise_rate"} <= set(columns)  # the model run's tags


def test_every_registered_name_has_its_implementation():
    """Names are registered once, in spec/; the implementation is found by `impl`."""
    from noisylabels.engine import augment, losses, models, two_phase
    from noisylabels.spec import losses as loss_specs, methods as method_specs, models as model_specs, train

    for registry, module in ((loss_specs.LOSSES, losses), (method_specs.PRETRAINS, two_phase),
                             (method_specs.SOFT_LOSSES, two_phase), (train.AUGMENTS, augment)):
        for name, spec in registry.items():
            assert callable(getattr(module, spec.impl)), name
    for name in model_specs.MODELS:
        assert callable(getattr(models, name)), name
