"""Robustness evaluation as a library: the attack protocol (`protocol`), the checks against masked gradients
(`checks`), the FSR feature analysis (`features`), the report as Markdown and Hub metadata (`report`) and its plot
(`plot`). `python -m fsr_models.evaluate` is the command line."""

from .checks import FSR_CHECK, input_gradient_is_zero, sanity_checks
from .features import feature_analysis, knn_accuracy
from .plot import plot_curve
from .protocol import (
    ATTACKS,
    WHITE_BOX,
    attack_settings,
    evaluate_attacks,
    pgd_settings,
    robustness_curve,
    run_attack,
)
from .report import COLUMNS, accuracy_table, column_title, eval_results, make_report, markdown, model_index
