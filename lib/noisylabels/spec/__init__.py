"""Typed settings, one module per concept, each with the one registry of its names.

    losses.py    every loss and its hyper-parameters   (formulas: noisylabels/losses.py)
    models.py    every network and its options          (noisylabels/models.py)
    methods.py   how a method trains: single-phase (loss + standard or D2L) or two-phase
                 (joint / PENCIL / O2U-Net phase 1, then a fine-tune)  (methods.py, two_phase.py)
    train.py     the optimizer, schedule, normalisation and augmentation (optim.py, augment.py)
    noise.py     noise types and settings                (noisylabels/noise.py)
    datasets.py  every data set and its download options (data/sources.py)
    base.py      the pydantic base class and the one-line error form

Pure pydantic, no torch: the light stages (noise, evaluate, report) validate every group
without importing torch. The torch side finds its implementation through the setting's
`impl` (a function or class name in the component's module), so a name is registered once,
here. `noisylabels.resolve` turns params.yaml into typed runs built from these.
"""
