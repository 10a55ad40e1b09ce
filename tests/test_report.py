"""Report tables: seed summaries, the published columns beside ours, and their labels."""
import pandas as pd
import pytest

from noisylabels.metrics import SEED_SUMMARY
from noisylabels.report import published, tables


def _runs(table, methods, settings, seeds=(0, 1, 2)):
    rows = []
    for m in methods:
        for s in settings:
            for seed in seeds:
                rows.append({"group": f"{table}-{m}-digits", "table": table, "dataset": "digits", "method": m,
                             "setting": s, "noise_type": s.split("-")[0], "noise_rate": float(s.split("-")[1]),
                             "seed": seed, "best_epoch": 1, **{k: 50.0 + seed for k in SEED_SUMMARY}})
    return pd.DataFrame(rows)


def test_transcribed_numbers_spot_checks():
    assert published.SCE_TABLE1["mnist"]["sl"]["symmetric-0.4"] == (98.97, 0.01)
    assert published.SCE_TABLE1["cifar100"]["ce"]["asymmetric-0.4"] == (61.85, 0.35)
    assert published.SCE_TABLE2["cifar10"]["forward_sl"]["asymmetric-0.4"] == (86.22, 0.18)
    assert published.SCE_TABLE2["cifar10"]["lsr_sl"]["symmetric-0.6"] == (79.28, 0.05)


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = tables.summarize(_runs("gce_table", ["cce"], ["symmetric-0.4"]))
    assert summary["test_acc_last_mean"].iloc[0] == pytest.approx(51.0)
    assert summary["test_acc_last_std"].iloc[0] == pytest.approx(1.0)


def test_table2_shows_cifar10_numbers_labelled_as_a_stand_in():
    summary = tables.summarize(_runs("sce_table2", ["forward_sl", "lsr_sl"],
                                     ["symmetric-0.4", "symmetric-0.6", "asymmetric-0.4"]))
    md = tables.table_markdown("T2", summary, [0, 1, 2])
    assert ("## published, cifar10: test accuracy (%), last epoch; Wang et al. 2019 (SCE), Table 2 "
            "(shown for reference: not the same data set as ours, digits)") in md
    assert "84.54 ± 0.03" in md and "80.99 ± 0.30" in md
    csv = tables.table_csv(summary)
    assert (csv["published_dataset"] == "cifar10").all() and csv["published_test_acc_last_mean"].notna().all()


def test_tables_without_published_numbers_say_so():
    summary = tables.summarize(_runs("gce_table", ["cce", "lq"], ["symmetric-0.4"]))
    md = tables.table_markdown("GCE", summary, [0, 1, 2])
    assert published.UNPUBLISHED["gce_table"] in md and "## published" not in md
    csv = tables.table_csv(summary)
    assert (csv["published_dataset"] == "").all() and not any(c.startswith("published_test") for c in csv)


def test_two_phase_tables_show_label_and_detection_metrics_beside_published():
    runs = _runs("o2u_table", ["base", "o2u"], ["symmetric-0.2", "symmetric-0.6"])
    runs.loc[runs["method"] == "o2u", "detect_precision"] = 80.0
    md = tables.table_markdown("O2U", tables.summarize(runs), [0, 1, 2])
    precision = md.split("## digits, ours: noise detection precision")[1].split("##")[0]
    assert "| o2u " in precision and "| base " not in precision  # only methods that detect
    assert "80.00 ± 0.00" in precision
    assert "## published, cifar4: noise detection precision" in md   # means only: no "±"
    assert "76.10" in md and "36.20" in md
    joint = published.JOINT_TABLES["cifar10"]
    assert joint["test_acc_best"]["improved"]["symmetric-all-0.9"] == (62.02, None)
    assert joint["test_acc_last"]["ce"]["asymmetric-0.5"] == (71.05, None)
