"""Training: `alexnet-tf train` and `evaluate` as library code.

    config      every setting in one frozen Config (model / data / train), the presets, JSON/YAML files
    loop        the fit loop: data, strategy, model, callbacks and the run directory (`train`)
    callbacks   the learning-rate schedule (warm-up, plateau, step), progress lines, best.keras
    backup      crash-safe backups at the exact batch, and resuming from them
    execution   precision x XLA: the timed choice behind --precision auto / --jit auto
    finetune    starting from trained weights (--init-from) and freezing layers (--freeze)
    evaluate    top-1 / top-5 error with the centre crop and the paper's 10 crops

Imports flow down to `network/`, `data/` and `process/` only.
"""
