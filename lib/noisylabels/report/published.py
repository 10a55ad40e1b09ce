"""Published numbers, transcribed by hand from the papers in ../shared/seeds/.

Shown in the reports beside ours and always labelled as published. PUBLISHED: table section
-> {source, datasets: data set -> metric -> method -> {noise setting name: (mean, std)},
stand_in}, in % (std None where the paper gives none). The metric names are ours
(metrics.py): test_acc_last, test_acc_best, detect_precision. `stand_in` names the
published data set shown beside one of ours that the paper does not have (the 8x8 digits
stand in for MNIST: same classes and asymmetric map, far smaller images). UNPUBLISHED says
why a table has no published column.
"""

_SCE_SETTINGS = ["symmetric-0", "symmetric-0.2", "symmetric-0.4", "symmetric-0.6", "symmetric-0.8",
                 "asymmetric-0.2", "asymmetric-0.3", "asymmetric-0.4"]


def _row(text: str, settings=tuple(_SCE_SETTINGS)) -> dict[str, tuple[float, float | None]]:
    """'99.02±0.01|88.71±0.05|...' (or means only, '91.66|89.00|...') -> {setting: (mean, std)},
    cells in `settings` order."""
    cells = [c.split("±") + [None] for c in text.split("|")]
    return {s: (float(c[0]), None if c[1] is None else float(c[1])) for s, c in zip(settings, cells, strict=True)}


# Wang et al., Symmetric Cross Entropy for Robust Learning with Noisy Labels, ICCV 2019,
# Table 1 (mean ± std of 5 runs; last-epoch test accuracy).
SCE_TABLE1 = {
    "mnist": {
        "ce": _row("99.02±0.01|88.71±0.05|69.56±0.19|46.54±0.28|21.77±0.07|93.14±0.04|87.91±0.05|81.10±0.07"),
        "lsr": _row("99.28±0.01|89.56±0.06|68.11±0.24|45.01±0.15|21.28±0.27|94.18±0.08|88.39±0.20|81.09±0.35"),
        "bootstrap": _row("99.08±0.01|88.72±0.14|69.97±0.36|47.06±0.26|22.60±0.27|93.31±0.03|87.87±0.09|80.46±0.15"),
        "forward": _row("99.03±0.01|94.85±0.07|86.02±0.13|69.77±0.41|49.72±0.30|97.31±0.05|96.25±0.10|95.72±0.09"),
        "d2l": _row("99.27±0.01|98.80±0.01|98.49±0.01|93.61±0.01|48.57±0.04|98.71±0.02|97.77±0.04|93.32±0.15"),
        "gce": _row("99.04±0.01|98.66±0.01|97.17±0.01|79.65±0.14|31.55±0.18|96.73±0.08|88.46±0.18|81.26±0.11"),
        "sl": _row("99.32±0.01|99.02±0.01|98.97±0.01|97.40±0.02|65.02±0.19|99.18±0.01|98.85±0.01|98.00±0.02"),
    },
    "cifar10": {
        "ce": _row("89.26±0.03|82.96±0.05|78.70±0.07|66.62±0.15|34.80±0.25|85.98±0.03|83.53±0.08|78.51±0.05"),
        "lsr": _row("88.57±0.04|83.49±0.05|78.41±0.03|67.38±0.15|36.30±0.16|85.38±0.05|82.89±0.12|77.88±0.20"),
        "bootstrap": _row("88.77±0.06|83.95±0.10|79.97±0.07|71.65±0.05|41.44±0.49|86.57±0.08|84.86±0.05|79.76±0.07"),
        "forward": _row("89.39±0.04|85.83±0.05|81.37±0.03|73.59±0.08|47.10±0.14|87.68±0.01|86.86±0.06|85.73±0.04"),
        "d2l": _row("86.66±0.05|81.13±0.06|76.80±0.12|60.67±0.12|19.83±0.05|82.72±0.06|80.41±0.05|73.33±0.12"),
        "gce": _row("86.76±0.03|84.86±0.06|82.42±0.10|75.20±0.09|40.81±0.24|84.61±0.09|82.11±0.13|75.32±0.10"),
        "sl": _row("89.28±0.04|87.63±0.06|85.34±0.07|80.07±0.02|53.81±0.27|88.24±0.05|85.36±0.14|80.64±0.10"),
    },
    "cifar100": {
        "ce": _row("64.34±0.37|59.26±0.39|50.82±0.19|25.39±0.09|5.27±0.06|62.97±0.19|63.12±0.16|61.85±0.35"),
        "lsr": _row("63.68±0.54|58.83±0.40|50.05±0.31|24.68±0.43|5.22±0.07|63.03±0.48|62.32±0.48|61.59±0.41"),
        "bootstrap": _row("63.26±0.39|57.91±0.42|48.17±0.18|12.27±0.11|1.00±0.01|63.44±0.35|63.18±0.35|62.08±0.22"),
        "forward": _row("63.99±0.52|59.75±0.34|53.13±0.28|24.70±0.26|2.65±0.03|64.09±0.61|64.00±0.32|60.91±0.36"),
        "d2l": _row("64.60±0.31|59.20±0.43|52.01±0.37|35.27±0.28|5.33±0.54|62.43±0.28|63.20±0.27|61.35±0.66"),
        "gce": _row("64.43±0.20|59.06±0.27|53.25±0.65|36.16±0.74|8.43±0.80|63.03±0.22|63.17±0.26|61.69±1.15"),
        "sl": _row("66.75±0.04|60.01±0.19|53.69±0.07|41.47±0.04|15.00±0.04|65.58±0.06|65.14±0.05|63.10±0.13"),
    },
}

# Wang et al. 2019, Table 2: SL-boosted Forward and LSR on CIFAR-10 (mean ± std of 5 runs).
_T2_SETTINGS = ("symmetric-0.4", "symmetric-0.6", "asymmetric-0.4")
SCE_TABLE2 = {
    "cifar10": {
        "forward_sl": _row("84.54±0.03|79.64±0.04|86.22±0.18", _T2_SETTINGS),
        "lsr_sl": _row("85.20±0.01|79.28±0.05|80.99±0.30", _T2_SETTINGS),
    },
}

# Seed 002 (improved joint optimisation), Tables 2 (symmetric) and 3 (asymmetric), CIFAR-10,
# mean of 5 trials, no std given. Its Tanaka et al. rows are the numbers it quotes from them.
_JOINT_SETTINGS = tuple([f"symmetric-all-{r}" for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
                        + [f"asymmetric-{r}" for r in (0.1, 0.2, 0.3, 0.4, 0.5)])
JOINT_TABLES = {
    "cifar10": {
        "test_acc_best": {
            "ce": _row("91.66|89.00|85.15|78.09|50.74|91.09|89.94|88.78|87.78|77.79", _JOINT_SETTINGS),
            "tanaka": _row("92.7|91.4|89.6|85.9|58.0|93.2|92.7|92.4|91.5|84.6", _JOINT_SETTINGS),
            "pencil": _row("93.26|92.09|90.29|87.10|61.21|93.00|92.43|91.84|91.01|80.51", _JOINT_SETTINGS),
            "improved": _row("93.47|92.65|91.00|87.67|62.02|93.32|92.70|92.87|92.16|85.45", _JOINT_SETTINGS),
        },
        "test_acc_last": {
            "ce": _row("88.43|72.78|53.11|33.32|16.30|85.24|80.74|76.09|76.12|71.05", _JOINT_SETTINGS),
            "tanaka": _row("92.9|91.5|89.8|86.0|58.3|93.2|92.8|92.4|91.7|84.7", _JOINT_SETTINGS),
            "pencil": _row("93.28|92.24|90.36|87.18|60.80|93.64|92.43|91.80|91.16|80.06", _JOINT_SETTINGS),
            "improved": _row("93.20|92.58|90.67|87.43|61.02|93.32|92.52|92.66|92.16|85.45", _JOINT_SETTINGS),
        },
    },
}

# Lanson and David 2023 (seed 004), Table 1, CIFAR-4 (one run; no std). 'Noise acc.' is
# the share of wrong labels among the removed samples: our detect_precision.
_O2U_SETTINGS = ("symmetric-0.2", "symmetric-0.6")
O2U_TABLE1 = {
    "cifar4": {
        "test_acc_last": {
            "base": _row("69.6|36.2", _O2U_SETTINGS),
            "o2u": _row("79.6|56.7", _O2U_SETTINGS),
            "apl": _row("75.7|49.6", _O2U_SETTINGS),
            "o2u_apl": _row("81.2|55.7", _O2U_SETTINGS),
        },
        "detect_precision": {
            "o2u": _row("76.1|77.6", _O2U_SETTINGS),
            "o2u_apl": _row("76.1|77.6", _O2U_SETTINGS),
        },
    },
}

# Clothing1M: SCE Table 3 (one accuracy per method, the 10k clean test images) and seed 002
# Table 4 (best test accuracy; its CE and Forward rows quote Patrini et al., its Tanaka and
# PENCIL rows their papers; PENCIL is not run here: its Clothing1M settings are not in the seeds).
_CLOTHING = ("real-noisy",)
SCE_TABLE3 = {"clothing1m": {"test_acc_last": {m: _row(v, _CLOTHING) for m, v in (
    ("ce", "68.80"), ("bootstrap", "68.94"), ("forward", "69.84"), ("d2l", "69.47"), ("gce", "69.75"), ("sl", "71.02"))}}}
JOINT_TABLE4 = {"clothing1m": {"test_acc_best": {m: _row(v, _CLOTHING) for m, v in (
    ("ce", "68.94"), ("forward", "69.84"), ("tanaka", "72.16"), ("pencil", "73.49"), ("improved", "73.63"))}}}

PUBLISHED = {
    "sce_table1": {"source": "Wang et al. 2019 (SCE), Table 1", "stand_in": {"digits": "mnist"},
                   "datasets": {d: {"test_acc_last": rows} for d, rows in SCE_TABLE1.items()}},
    "sce_table2": {"source": "Wang et al. 2019 (SCE), Table 2", "stand_in": {"digits": "cifar10"},
                   "datasets": {d: {"test_acc_last": rows} for d, rows in SCE_TABLE2.items()}},
    "joint_table": {"source": "seed 002, Tables 2-3 (mean of 5 trials, no std given)", "stand_in": {"digits": "cifar10"},
                    "datasets": JOINT_TABLES},
    "o2u_table": {"source": "Lanson and David 2023 (seed 004), Table 1 (no std given)", "stand_in": {"digits": "cifar4"},
                  "datasets": O2U_TABLE1},
    "sce_table3": {"source": "Wang et al. 2019 (SCE), Table 3 (no std given)", "stand_in": {},
                   "datasets": SCE_TABLE3},
    "joint_table4": {"source": "seed 002, Table 4 (best test accuracy, no std given)", "stand_in": {},
                     "datasets": JOINT_TABLE4},
}

# Method keys of params.yaml -> the names the papers print (rows of the report tables).
PAPER_NAMES = {
    "ce": "CE", "lsr": "LSR", "bootstrap": "Bootstrap", "forward": "Forward", "d2l": "D2L", "gce": "GCE",
    "sl": "SL", "forward_sl": "Forward+SL", "lsr_sl": "LSR+SL", "cce": "CCE", "mae": "MAE", "lq": "Lq",
    "truncated_lq": "Truncated Lq", "nce_rce": "NCE+RCE", "nce_mae": "NCE+MAE", "nfl_rce": "NFL+RCE",
    "nfl_mae": "NFL+MAE", "tanaka": "Tanaka et al.", "pencil": "PENCIL", "improved": "Ours (improved)",
    "base": "Base", "apl": "APL", "o2u": "O2U-Net", "o2u_apl": "O2U-Net + APL",
    # figure sections: SCE's ablation (Fig. 9a) and the GCE slides' Lq family
    "rce": "RCE", "ce2": "2CE", "ce5": "5CE", "rce5": "5RCE", "lq03": "Lq (q=0.3)", "lq07": "Lq (q=0.7)",
}

UNPUBLISHED = {
    "gce_table": "The GCE seed (../shared/seeds/003) is the paper's slides, which show no numbers, "
                 "so no published column is shown.",
    "apl_table": "The APL paper is not among the seeds (../shared/seeds), so no published column "
                 "is shown.",
    "cifarn_table": "CIFAR-N (Wei et al. 2022) is not among the seeds and none of the four papers uses it, "
                    "so no published column is shown.",
}
