"""Report tables: seed summaries, the published columns beside ours, and their labels."""
import re

import pandas as pd
import pytest

from noisylabels.engine.metrics import SEED_SUMMARY
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


def _flat(md):
    """The Markdown with every run of spaces as one (tables pad their cells)."""
    return re.sub(" +", " ", md)


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
    assert ("## digits: test accuracy (%), last epoch\n\nIn brackets: published, cifar10 (Wang et al. 2019 (SCE), "
            "Table 2, shown for reference: not the same data set as ours).") in md
    # the papers' method names, and the published number in the same cell as ours
    assert "| Forward+SL | 51.00 ± 1.00 [84.54 ± 0.03] |" in _flat(md) and "[80.99 ± 0.30]" in md
    csv = tables.table_csv(summary)
    assert (csv["published_dataset"] == "cifar10").all() and csv["published_test_acc_last_mean"].notna().all()


def test_tables_without_published_numbers_say_so():
    summary = tables.summarize(_runs("gce_table", ["cce", "lq"], ["symmetric-0.4"]))
    md = tables.table_markdown("GCE", summary, [0, 1, 2])
    assert published.UNPUBLISHED["gce_table"] in md and "In brackets" not in md and "[" not in md
    csv = tables.table_csv(summary)
    assert (csv["published_dataset"] == "").all() and not any(c.startswith("published_test") for c in csv)


def test_two_phase_tables_show_label_and_detection_metrics_beside_published():
    runs = _runs("o2u_table", ["base", "o2u"], ["symmetric-0.2", "symmetric-0.6"])
    runs.loc[runs["method"] == "o2u", "detect_precision"] = 80.0
    md = tables.table_markdown("O2U", tables.summarize(runs), [0, 1, 2])
    precision = md.split("## digits: noise detection precision")[1].split("##")[0]
    assert "| O2U-Net " in precision and "| Base " not in precision  # only methods that detect
    assert "80.00 ± 0.00 [76.10]" in precision  # the paper gives means only: no "±"
    assert "In brackets: published, cifar4 (Lanson and David 2023 (seed 004), Table 1" in precision
    assert "| Base | 51.00 ± 1.00 [69.60] | 51.00 ± 1.00 [36.20] |" in _flat(md)
    joint = published.JOINT_TABLES["cifar10"]
    assert joint["test_acc_best"]["improved"]["symmetric-all-0.9"] == (62.02, None)
    assert joint["test_acc_last"]["ce"]["asymmetric-0.5"] == (71.05, None)


def test_one_seed_shows_the_mean_alone():
    summary = tables.summarize(_runs("gce_table", ["cce"], ["symmetric-0.4"], seeds=(0,)))
    md = tables.table_markdown("GCE", summary, [0])
    assert "| CCE | 50.00 |" in _flat(md) and "±" not in md.split("##", 1)[1]
    assert tables.metrics_summary(summary)["gce_table"]["digits"]["cce"] == 50.0


def test_metrics_json_holds_one_number_per_table_method_the_mean_over_settings():
    runs = _runs("sce_table1", ["ce", "sl"], ["symmetric-0.2", "symmetric-0.6"])
    runs.loc[(runs["method"] == "sl") & (runs["setting"] == "symmetric-0.6"), "test_acc_last"] += 10.0
    summary = tables.summarize(runs)
    per_setting = summary.set_index(["method", "setting"])["test_acc_last_mean"]
    metrics = tables.metrics_summary(summary)
    assert metrics["sce_table1"]["digits"] == {
        "ce": round((per_setting["ce", "symmetric-0.2"] + per_setting["ce", "symmetric-0.6"]) / 2, 4),
        "sl": round((per_setting["sl", "symmetric-0.2"] + per_setting["sl", "symmetric-0.6"]) / 2, 4)}
    assert metrics["sce_table1"]["digits"]["sl"] == metrics["sce_table1"]["digits"]["ce"] + 5.0


def test_two_phase_methods_with_the_same_phase1_are_noted(params):
    from noisylabels.resolve import resolve_group

    improved = params["o2u_table"]["digits"]["methods"]["improved"]
    params["o2u_table"]["digits"]["methods"]["improved2"] = {**improved, "finetune": {**improved["finetune"], "mixup": 0.5}}
    params["two_phase_groups"]["g2"] = {"table": "o2u_table", "dataset": "digits", "method": "improved2"}
    groups = [resolve_group(params, g) for g in params["two_phase_groups"]]
    assert tables.shared_phase1(groups) == [
        "Ours (improved) and improved2 share phase 1 on digits (the same pretrain settings): their label-correction or "
        "detection numbers are those of the same phase 1."]


def test_a_claim_holds_when_the_mean_paired_difference_is_positive_at_every_setting():
    from noisylabels.report import claims

    runs = _runs("sce_table1", ["ce", "sl"], ["symmetric-0.4", "symmetric-0.6"])
    sl = runs["method"] == "sl"
    runs.loc[sl, "test_acc_last"] += [3.0, -1.0, 1.0, 2.0, 2.0, 2.0]  # 0.4: +3, -1, +1 (mean +1); 0.6: +2 each
    claim = claims.Claim("sce", "SL beats CE", "sce_table1", (("sl", "ce"),), ("symmetric-0.4", "symmetric-0.6"))
    (result,) = claims.check(claim, runs)
    assert result["holds"] and result["dataset"] == "digits"
    assert result["lines"][0] == ("symmetric 0.4: SL 52.00 ± 1.73 vs CE 51.00 ± 1.00; paired differences +3.00, "
                                  "-1.00, +1.00 (mean +1.00); paper (mnist): 98.97 vs 69.56")
    runs.loc[sl & (runs["setting"] == "symmetric-0.6"), "test_acc_last"] -= 2.0  # a tie at 0.6
    assert not claims.check(claim, runs)[0]["holds"]
    tie = claims.Claim("sce", "SL at least as good", "sce_table1", (("sl", "ce"),), ("symmetric-0.6",), at_least=True)
    assert claims.check(tie, runs)[0]["holds"]


def test_claims_report_counts_per_paper_and_skips_tables_not_run():
    from noisylabels.report import claims

    runs = _runs("o2u_table", ["base", "apl", "o2u", "o2u_apl"], ["symmetric-0.2", "symmetric-0.6"])
    runs.loc[runs["method"] == "o2u", "test_acc_last"] += 5.0
    runs["detect_precision"], runs["realized_noise_rate"] = 80.0, 0.2
    md, counts = claims.claims_report(runs)
    o2u_claims = [c for c in claims.CLAIMS if c.paper == "o2u"]
    assert list(counts) == ["o2u"] and counts["o2u"]["checked"] == len(o2u_claims) >= 5
    # O2U beats Base and APL; O2U+APL is not at least as good as O2U; precision 80% > 20% wrong
    assert counts["o2u"]["hold"] == 3
    assert "## O2U-Net + APL (Lanson and David 2023, seed 004): 3 of 6 hold" in md
    assert "O2U-Net (detection precision) 80.00 ± 0.00 vs O2U-Net (share of wrong labels) 20.00 ± 0.00" in md
    assert claims.as_metrics(counts) == {"o2u": 0.5}
    assert all(len([c for c in claims.CLAIMS if c.paper == p]) >= 5 for p in claims.PAPERS)


def test_classwise_accuracy_per_epoch_from_saved_predictions():
    import numpy as np

    from noisylabels.report.paper_figures import classwise_per_epoch

    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([[0, 1, 1, 1, 0],    # epoch 1: class 0 half right, class 1 all, class 2 none
                      [0, 0, 0, 1, 2]])   # epoch 2: 1, 1/2, 1
    assert classwise_per_epoch(preds, labels, 3).tolist() == [[0.5, 1.0, 0.0], [1.0, 0.5, 1.0]]


def test_a_figure_whose_runs_are_not_in_params_is_skipped(params):
    from noisylabels.report import paper_figures

    ctx = paper_figures.Runs(params, "unused", "unused", "unused")
    with pytest.raises(paper_figures.NotRun, match="no group of sce_table1 with method 'lsr' on digits"):
        paper_figures.sce_classwise_curves(ctx, "digits")
    assert ctx.datasets("sce_table1") == ["digits"] and ctx.datasets("sce_params") == []
