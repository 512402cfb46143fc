"""The library behind `training/train.py`: the config (`config`), where a run starts or resumes, its plan of
epochs and its checkpoints (`checkpoint`), the parts of the loop (`loop`: data, network and optimiser, one epoch,
accuracy on a split) and what a run writes (`record`). The script's `main` puts them together, top to bottom."""

from .checkpoint import (
    RunStart,
    TimeLimit,
    end_if_collapsed,
    extend,
    initial_progress,
    note_best,
    plan_epoch,
    plan_from_epoch,
    plan_message,
    save_checkpoint,
    start_or_resume,
    time_limit_reached,
)
from .config import (
    COMPILE_MODES,
    RESUME_MAY_CHANGE,
    ConfigError,
    TrainConfig,
    check_processes,
    config_values,
    load_config,
    one_line_errors,
    portable_config,
)
from .loop import (
    NonFiniteLoss,
    Training,
    TrainingData,
    adversarial_loss,
    augment,
    build_training,
    clean_and_pgd_accuracy,
    compile_available,
    compiled,
    input_gradient_twin,
    lr_factor,
    shard_batches,
    train_epoch,
    training_data,
    validation_batch,
)
from .record import (
    RunLog,
    final_test,
    print_checksum,
    run_header,
    save_best,
    what_was_kept,
)
