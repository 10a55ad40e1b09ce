"""Bad input, as a new user would type it: every case runs a stage (in this process, through
click, as `python stages/<stage>.py` would) and must stop with exit code 2, one line on
stderr (`error: ` + the key, the value, what is allowed), nothing on stdout, no output
written and no MLflow store or run created.

PARAMS cases edit the tiny params and run the validate stage, the pipeline's first stage
(what `dvc exp run -S key=value` meets before any output is deleted); OPTIONS cases give a
stage a bad command-line option. Damaged intermediate files are in test_damaged.py, bad
downloads in test_data.py.
"""
import importlib.util

import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO

O2U = "o2u_table.digits.methods.o2u"
IMPROVED = "o2u_table.digits.methods.improved"


def _holder(params, path):
    """(the mapping that holds the key at `path`, keys joined by dots; that key)."""
    *parents, last = path.split(".")
    for key in parents:
        params = params[key]
    return params, last


def at(path, value):
    """Set params[path] to value."""
    def edit(params):
        holder, key = _holder(params, path)
        holder[key] = value
    return edit


def drop(path):
    """Remove params[path]."""
    def edit(params):
        holder, key = _holder(params, path)
        del holder[key]
    return edit


def yaml_text(text):
    """params.yaml replaced by this text."""
    return lambda params: text


def both(*edits):
    def edit(params):
        for e in edits:
            e(params)
    return edit


def cifar4(params):
    params["data"]["name"] = "cifar4"
    params["datasets"]["cifar4"] = {"classes": ["cat", "deer", "dog", "horse"]}


PARAMS = [  # (id, edit, the error line's text after "error: ", in full or (ending in ...) its start)
    # the main run's sections
    ("unknown data set", at("data.name", "imagenet"), "data.name='imagenet': expected one of digits, mnist, ..."),
    ("unknown noise type", at("noise.type", "gaussian"), "noise.type='gaussian': expected one of ..."),
    ("noise rate 1", at("noise.rate", 1.0), "noise.rate=1.0: expected a number < 1"),
    ("negative noise rate", at("noise.rate", -0.1), "noise.rate=-0.1: expected a number >= 0"),
    ("NaN noise rate", at("noise.rate", float("nan")), "noise.rate=nan: expected a finite number"),
    ("unknown draw", at("noise.draw", "coin"), "noise.draw='coin': expected ..."),
    ("no seeds", at("noise.seeds", []), "noise.seeds=[]: ..."),
    ("a seed twice", at("noise.seeds", [0, 0]), "noise.seeds=[0, 0]: ..."),
    ("seeds as a string", at("noise.seeds", "0,1"), "noise.seeds='0,1': expected a list"),
    ("val fraction 1", at("noise.val_fraction", 1.0), "noise.val_fraction=1.0: ..."),
    ("asymmetric noise without a class map", both(cifar4, at("noise.type", "asymmetric")),
     "noise.type='asymmetric': ..."),
    ("unknown loss", at("loss.name", "focal"), "loss.name='focal': expected one of ..."),
    ("rce A of 0", at("loss.A", 0.0), "loss.A=0.0: expected a number < 0"),
    ("negative alpha", at("loss.alpha", -1), "loss.alpha=-1: expected a number >= 0"),
    ("NaN alpha", at("loss.alpha", float("nan")), "loss.alpha=nan: expected a finite number"),
    ("infinite beta", at("loss.beta", float("inf")), "loss.beta=inf: expected a finite number"),
    ("misspelt loss key", at("loss.alpah", 0.1), "loss.alpah=0.1: unknown key; ..."),
    ("gce q 0", at("loss", {"name": "gce", "q": 0}), "loss.q=0: expected a number > 0"),
    ("gce q above 1", at("loss", {"name": "gce", "q": 1.5}), "loss.q=1.5: expected a number <= 1"),
    ("ngce negative q", at("loss", {"name": "ngce", "q": -0.1}), "loss.q=-0.1: expected a number > 0"),
    ("rce positive A", at("loss", {"name": "rce", "A": 1.0}), "loss.A=1.0: expected a number < 0"),
    ("sl negative beta", at("loss.beta", -1.0), "loss.beta=-1.0: expected a number >= 0"),
    ("nce_rce negative alpha", at("loss", {"name": "nce_rce", "alpha": -1, "beta": 1.0, "A": -4.0}),
     "loss.alpha=-1: expected a number >= 0"),
    ("bootstrap mode", at("loss", {"name": "bootstrap", "beta": 0.8, "mode": "medium"}), "loss.mode='medium': ..."),
    ("lsr epsilon 1", at("loss", {"name": "lsr", "epsilon": 1.0}), "loss.epsilon=1.0: ..."),
    ("truncated lq start after the last epoch",
     at("loss", {"name": "truncated_lq", "q": 0.7, "k": 0.5, "start_epoch": 3, "interval": 1}),
     "loss.start_epoch=3: expected an epoch <= train.epochs=2"),
    ("unknown forward matrix", at("loss", {"name": "forward", "matrix": "oracle", "anchor_percentile": 97.0}),
     "loss.matrix='oracle': ..."),
    ("matrix row not summing to 1",
     at("loss", {"name": "forward", "matrix": [[0.5, 0.4], [0.0, 1.0]], "anchor_percentile": 97.0}),
     "loss.matrix=[[0.5, 0.4], [0.0, 1.0]]: row 0 sums to 0.9..."),
    ("matrix of the wrong size",
     at("loss", {"name": "backward", "matrix": [[0.5, 0.5], [0.0, 1.0]], "anchor_percentile": 97.0}),
     "loss.matrix='2x2': expected a 10x10 matrix..."),
    ("anchor percentile 0", at("loss", {"name": "forward", "matrix": "realized", "anchor_percentile": 0}),
     "loss.anchor_percentile=0: ..."),
    ("unknown model", at("model.name", "resnet9000"), "model.name='resnet9000': expected one of ..."),
    ("model as a list", at("model", ["digits_mlp"]), "model=['digits_mlp']: expected a mapping..."),
    ("no hidden units", at("model.hidden", 0), "model.hidden=0: expected a number >= 1"),
    ("unknown procedure", at("procedure.name", "coteaching"), "procedure.name='coteaching': expected one of ..."),
    ("d2l init epoch at the end", at("procedure", {"name": "d2l", "lid_k": 20, "lid_samples": 1280, "lid_batch": 128,
                                                    "window": 5, "init_epoch": 2}),
     "procedure.init_epoch=2: expected an epoch < train.epochs=2"),
    ("milestone after the last epoch", at("train.milestones", [5]), "train.milestones=[5]: ..."),
    ("milestones not increasing", at("train.milestones", [1, 1]), "train.milestones=[1, 1]: ..."),
    ("lr 0", at("train.lr", 0), "train.lr=0: expected a number > 0"),
    ("negative lr", at("train.lr", -1), "train.lr=-1: expected a number > 0"),
    ("NaN lr", at("train.lr", float("nan")), "train.lr=nan: expected a finite number"),
    ("infinite lr", at("train.lr", float("inf")), "train.lr=inf: expected a finite number"),
    ("lr as a word", at("train.lr", "fast"), "train.lr='fast': expected a number"),
    ("NaN momentum", at("train.momentum", float("nan")), "train.momentum=nan: expected a finite number"),
    ("negative weight decay", at("train.weight_decay", -1.0), "train.weight_decay=-1.0: ..."),
    ("NaN gamma", at("train.gamma", float("nan")), "train.gamma=nan: expected a finite number"),
    ("zero epochs", at("train.epochs", 0), "train.epochs=0: expected a number >= 1"),
    ("a billion epochs", at("train.epochs", 1_000_000_000), "train.epochs=1000000000: expected a number <= 10000"),
    ("zero batch size", at("train.batch_size", 0), "train.batch_size=0: expected a number >= 2"),
    ("unknown device", at("train.device", "tpu"), "train.device='tpu': expected auto, cpu, cuda or cuda:<GPU index>"),
    ("GPU index as a word", at("train.device", "cuda:first"),
     "train.device='cuda:first': expected auto, cpu, cuda or cuda:<GPU index>"),
    ("unknown train key", at("train.warmup", 5), "train.warmup=5: unknown key; ..."),
    ("missing epochs", drop("train.epochs"), "train.epochs: missing"),
    ("missing train section", drop("train"), "train: missing section in params.yaml"),
    ("unknown augmentation", at("train.augment", {"name": "zoom"}),
     "train.augment.name='zoom': expected one of none, shift, crop, center_crop"),
    ("crop without flip", at("train.augment", {"name": "crop", "size": 32, "padding": 4}), "train.augment.flip: missing"),
    ("flip as a word", at("train.augment", {"name": "shift", "shift": 0.2, "rotation": 20, "flip": "yes"}),
     "train.augment.flip='yes': expected true or false"),
    ("unknown normalisation", at("train.normalize", "zca"),
     "train.normalize='zca': expected one of channel, pixel_mean or imagenet"),
    ("negative l2", at("train.l2", {"fc1": -1}), "train.l2.fc1=-1: expected a number >= 0"),
    ("negative lr decay", at("train.lr_decay", -1e-4), "train.lr_decay=-0.0001: expected a number >= 0"),
    ("unknown schedule", at("train.schedule", "linear"), "train.schedule='linear': expected one of step or cosine"),
    ("cosine with milestones", at("train.schedule", "cosine"), "train.milestones=[1]: expected [] with schedule: cosine"),
    ("final lr above the lr", at("train.lr_min", 0.5), "train.lr_min=0.5: expected a number below lr=0.1"),
    ("zero gradient clip", at("train.grad_clip", 0), "train.grad_clip=0: expected a number > 0"),
    ("zero runs per stack", at("train.stack", 0), "train.stack=0: expected auto, off or a number of runs >= 1"),
    ("stack as a word", at("train.stack", "always"), "train.stack='always': expected auto, off or a number of runs >= 1"),
    ("nesterov as a word", at("train.nesterov", "on"), "train.nesterov='on': expected true or false"),
    ("unknown precision", at("train.precision", "fp16"), "train.precision='fp16': expected one of fp32 or bf16"),
    ("unknown compile mode", at("train.compile", "fast"),
     "train.compile='fast': expected one of none, default, reduce-overhead or max-autotune"),
    # the data sets
    ("data set without its settings", at("data.name", "mnist"), "datasets.mnist: missing..."),
    ("cifar4 unknown class", both(cifar4, at("datasets.cifar4.classes", ["cat", "wolf"])),
     "datasets.cifar4.classes[1]='wolf': ..."),
    ("test fraction above a half", at("datasets.digits.test_fraction", 0.9), "datasets.digits.test_fraction=0.9: ..."),
    ("negative split seed", at("datasets.digits.split_seed", -1), "datasets.digits.split_seed=-1: ..."),
    ("a training subset of one", at("datasets.digits.max_train", 1),
     "datasets.digits.max_train=1: expected a number >= 2"),
    ("download misses a data set", at("download", ["mnist"]),
     "download=['mnist']: expected it to list 'digits', the data set of group 'main'"),
    ("download of an unknown data set", at("download", ["svhn"]), "download[0]='svhn': expected one of digits, ..."),
    # tables and groups
    ("table noise rate above 1", at("sce_table1.noise.settings.symmetric", [0.2, 1.5]),
     "sce_table1.noise.settings.symmetric[1]=1.5: ..."),
    ("table loss unknown", at("sce_table1.digits.methods.sl.loss.name", "slx"),
     "sce_table1.digits.methods.sl.loss.name='slx': ..."),
    ("group of an unknown method", at("groups.sce_table1-ce-digits.method", "gce"),
     "groups.sce_table1-ce-digits.method='gce': ..."),
    ("group of an unknown table", at("groups.sce_table1-ce-digits.table", "sce_table9"),
     "groups.sce_table1-ce-digits.table='sce_table9': ..."),
    ("group without a data set", drop("groups.sce_table1-ce-digits.dataset"),
     "groups.sce_table1-ce-digits.dataset: missing"),
    ("two-phase method among the groups", at("groups.wrong", {"table": "o2u_table", "dataset": "digits",
                                                               "method": "o2u"}),
     "groups.wrong.method='o2u': ... belongs under two_phase_groups..."),
    ("group in both lists", lambda p: p["two_phase_groups"].update(
        {"sce_table1-ce-digits": p["groups"]["sce_table1-ce-digits"]}),
     "group='sce_table1-ce-digits': listed twice (main, groups, two_phase_groups); expected one entry"),
    ("groups without a training stage", drop("train_stages.sce_table1-digits"),
     "train_stages: no entry sce_table1-digits for the groups sce_table1-ce-digits, sce_table1-sl-digits, "
     "sce_table1-forward-digits; expected one entry per table and data set of `groups`"),
    ("training stage without groups", at("train_stages.gce_table-digits", {"table": "gce_table", "dataset": "digits"}),
     "train_stages.gce_table-digits: no group of `groups` has table gce_table and data set digits; "
     "expected the entry removed"),
    ("training stage under another key", at("train_stages.t1", {"table": "sce_table1", "dataset": "digits"}),
     "train_stages.t1: expected the key sce_table1-digits (<table>-<dataset>)"),
    ("training stage of an unknown data set", at("train_stages.sce_table1-digits.dataset", "svhn"),
     "train_stages.sce_table1-digits.dataset='svhn': expected one of digits, ..."),
    ("group written twice", yaml_text(
        "groups:\n  a: {table: t, dataset: digits, method: ce}\n  a: {table: t, dataset: digits, method: sl}\n"),
     "params file 'params.yaml': not valid YAML (key 'a' appears twice in one mapping (line 3))"),
    # two-phase methods
    ("forget rate 1", at(f"{O2U}.pretrain.forget_rate", 1.0),
     "o2u_table.digits.methods.o2u.pretrain.forget_rate=1.0: expected a number in [0, 1)..."),
    ("negative forget rate", at(f"{O2U}.pretrain.forget_rate", -0.1),
     "o2u_table.digits.methods.o2u.pretrain.forget_rate=-0.1: ..."),
    ("forget rate as a word", at(f"{O2U}.pretrain.forget_rate", "half"),
     "o2u_table.digits.methods.o2u.pretrain.forget_rate='half': ...realized_noise_rate (the run's share of wrong labels) or gmm..."),
    ("cycle 0", at(f"{O2U}.pretrain.cycle", 0), "o2u_table.digits.methods.o2u.pretrain.cycle=0: expected a number >= 1"),
    ("cycle longer than the cyclic epochs", at(f"{O2U}.pretrain.cycle", 3),
     "o2u_table.digits.methods.o2u.pretrain.cycle=3: expected at most..."),
    ("unknown phase 1", at(f"{O2U}.pretrain.name", "coteaching"), "o2u_table.digits.methods.o2u.pretrain.name='coteaching': ..."),
    ("soft loss on hard labels", at(f"{O2U}.finetune.loss", {"name": "kl"}),
     "o2u_table.digits.methods.o2u.finetune.loss.name='kl': ..."),
    ("unknown init", at(f"{O2U}.finetune.init", "imagenet"), "o2u_table.digits.methods.o2u.finetune.init='imagenet': ..."),
    ("finetune milestone after the last epoch", at(f"{O2U}.finetune.milestones", [5]),
     "o2u_table.digits.methods.o2u.finetune.milestones=[5]: expected increasing epochs below..."),
    ("override of an unknown setting", at(f"{O2U}.finetune.overrides", {"symmetric-0.9": {"lr": 0.1}}),
     "o2u_table.digits.methods.o2u.finetune.overrides.symmetric-0.9..."),
    ("joint start after the last epoch", at(f"{IMPROVED}.pretrain.start_epoch", 3),
     "o2u_table.digits.methods.improved.pretrain.start_epoch=3: expected an epoch <= ..."),
    # the file itself
    ("params not YAML", yaml_text("train: [unclosed\n"), "params file 'params.yaml': not valid YAML (line 2: did not find expected ',' or ']')"),
    ("params a list", yaml_text("- train\n- loss\n"), "params file ...: expected a mapping..."),
]


def _stage(script):
    """The click command of stages/<script>."""
    spec = importlib.util.spec_from_file_location(f"stage_{script[:-3]}", REPO / "stages" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _matches(line, expect):
    text = line.removeprefix("error: ")
    parts = expect.split("...")
    if not (line.startswith("error: ") and text.startswith(parts[0]) and text.endswith(parts[-1])):
        return False
    at_ = len(parts[0])  # the middle parts, in order
    for part in parts[1:-1]:
        at_ = text.find(part, at_)
        if at_ < 0:
            return False
        at_ += len(part)
    return True


def _fails_cleanly(tmp_path, script, args, expect, outputs):
    result = CliRunner().invoke(_stage(script), [str(a) for a in args])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert len(lines) == 1 and _matches(lines[0], expect), lines
    assert result.stdout == ""
    assert not any(o.exists() for o in outputs)
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow store, so no run
    return lines[0]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


@pytest.mark.parametrize("edit,expect", [c[1:] for c in PARAMS], ids=[c[0] for c in PARAMS])
def test_bad_params_stop_the_first_stage(workspace, params, edit, expect):
    text = edit(params)
    (workspace / "params.yaml").write_text(text if isinstance(text, str) else yaml.safe_dump(params, sort_keys=False))
    out, recipes = workspace / "data" / "validated.txt", workspace / "data" / "noise_recipes.json"
    _fails_cleanly(workspace, "validate.py", ["--out", out, "--recipes", recipes], expect, [out, recipes])


OPTIONS = [  # (id, stage, its arguments, the error line as in PARAMS)
    ("zero workers", "pretrain.py", ["--group", "main", "--workers", "0"],
     "Invalid value for '--workers' (env var: 'NOISYLABELS_WORKERS'): 0 is not in the range x>=1."),
    ("negative workers", "finetune.py", ["--group", "o2u_table-o2u-digits", "--workers", "-1"],
     "Invalid value for '--workers' (env var: 'NOISYLABELS_WORKERS'): -1 is not in the range x>=1."),
    ("zero threads", "pretrain.py", ["--group", "main", "--threads", "0"],
     "Invalid value for '--threads' (env var: 'NOISYLABELS_THREADS'): 0 is not in the range x>=1."),
    ("threads as a word", "pretrain.py", ["--group", "main", "--threads", "many"],
     "Invalid value for '--threads' (env var: 'NOISYLABELS_THREADS'): 'many' is not a valid integer range."),
    ("unknown executor", "pretrain.py", ["--group", "main", "--executor", "dask"],
     "Invalid value for '--executor' (env var: 'NOISYLABELS_EXECUTOR'): 'dask' is not one of 'local', 'ray'."),
    ("GPU share above one", "pretrain.py", ["--group", "main", "--gpus-per-run", "2"],
     "Invalid value for '--gpus-per-run' (env var: 'NOISYLABELS_GPUS_PER_RUN'): 2.0 is not in the range 0<x<=1."),
    ("checkpoint interval as a word", "pretrain.py", ["--group", "main", "--checkpoint-every", "soon"],
     "--checkpoint-every='soon': ..."),
    ("checkpoint every 0 epochs", "pretrain.py", ["--group", "main", "--checkpoint-every", "0epochs"],
     "--checkpoint-every='0epochs': ..."),
    ("unknown group", "pretrain.py", ["--group", "nope"], "group='nope': ..."),
    ("finetune of a single-phase group", "finetune.py", ["--group", "main"],
     "group='main': not a two-phase group; finetune runs the groups of two_phase_groups"),
    ("no group", "pretrain.py", [], "Missing option '--group'."),
    ("misspelt option", "pretrain.py", ["--group", "main", "--wokers", "2"],
     "No such option '--wokers'. Did you mean '--workers'?"),
    ("unknown data set to download", "download.py", ["--dataset", "svhn"], "dataset='svhn': ..."),
    ("params file missing", "noise.py", ["--params", "missing.yaml"], "params file 'missing.yaml': not found"),
    ("evaluate an unknown group", "evaluate.py", ["--group", "nope"], "group='nope': ..."),
]


@pytest.mark.parametrize("script,args,expect", [c[1:] for c in OPTIONS], ids=[c[0] for c in OPTIONS])
def test_bad_options_stop_the_stage(workspace, params, script, args, expect):
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = workspace / "out"
    _fails_cleanly(workspace, script, [*args, "--out", out], expect, [out, workspace / ".checkpoints"])

