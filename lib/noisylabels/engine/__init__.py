"""The training engine: the code a trained run's outputs depend on, in one folder so that
every training stage depends on it as one entry of dvc.yaml (a change here reruns them; a
change to tracking, the report or the stage options does not). With 13 file entries per
training stage, dvc.lock had 74 kB; with one, 46 kB. DVC parses and rewrites it whole after
every stage it runs (0.86 s for 74 kB, 0.41 s for 43 kB here), and parses it again for
every stage it checks.

    noise.py      label-noise generators, the held-out split (also the noise stage's)
    augment.py    normalisation and the papers' augmentations, on the device
    models.py     the networks, by name
    losses.py     every loss, by name
    optim.py      the optimizer and learning-rate schedule
    methods.py    how a run turns its loss into training (D2L, truncated Lq, Forward/Backward)
    two_phase.py  label correction or sample selection, then fine-tuning
    loop.py       one run's training loop
    stack.py      several runs trained as one model (train.stack)
    workers.py    runs trained side by side: processes here, or a Ray cluster's tasks
    runner.py     the pretrain and finetune stages: a group's runs trained, logged, saved
    metrics.py    a run's metrics from its predictions (also the evaluate stage's)
    results.py    the training stages' on-disk format
"""
