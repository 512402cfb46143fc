"""The library behind `training/train.py`: the config (`config`), where a run starts or resumes, its plan of
epochs and its checkpoints (`checkpoint`), the parts of the loop (`loop`: data, network and optimiser, one epoch,
accuracy on a split) and what a run writes (`record`). The script's `main` puts them together, top to bottom.

The names load with their module on first use: reading a config (`fsr_models.training.config`, which the cards use)
does not import the trainer (its loop, checkpoints and records).
"""

import importlib

_WHERE = {
    "RunStart": "checkpoint",
    "TimeLimit": "checkpoint",
    "end_if_collapsed": "checkpoint",
    "extend": "checkpoint",
    "initial_progress": "checkpoint",
    "note_best": "checkpoint",
    "plan_epoch": "checkpoint",
    "plan_from_epoch": "checkpoint",
    "plan_message": "checkpoint",
    "save_checkpoint": "checkpoint",
    "start_or_resume": "checkpoint",
    "time_limit_reached": "checkpoint",
    "COMPILE_MODES": "config",
    "RESUME_MAY_CHANGE": "config",
    "ConfigError": "config",
    "TrainConfig": "config",
    "check_processes": "config",
    "config_values": "config",
    "load_config": "config",
    "one_line_errors": "config",
    "portable_config": "config",
    "NonFiniteLoss": "loop",
    "Training": "loop",
    "TrainingData": "loop",
    "adversarial_loss": "loop",
    "augment": "loop",
    "build_training": "loop",
    "clean_and_pgd_accuracy": "loop",
    "compile_available": "loop",
    "compiled": "loop",
    "input_gradient_twin": "loop",
    "lr_factor": "loop",
    "shard_batches": "loop",
    "train_epoch": "loop",
    "training_data": "loop",
    "validation_batch": "loop",
    "RunLog": "record",
    "final_test": "record",
    "print_checksum": "record",
    "run_header": "record",
    "save_best": "record",
    "what_was_kept": "record",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in set(_WHERE.values()):  # a module itself: fsr_models.training.loop
        return importlib.import_module(f".{name}", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
