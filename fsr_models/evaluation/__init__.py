"""Robustness evaluation as a library: the attacks (`attacks`; the training attacks too), the attacks designed
against FSR (`adaptive`), the attack protocol (`protocol`), the checks against masked gradients
(`checks`), the FSR feature analysis (`features`), the report as Markdown and Hub metadata (`report`) and its plot
(`plot`). `python -m fsr_models.evaluate` is the command line."""

from fsr_models.evaluation.checks import FSR_CHECK, input_gradient_is_zero, sanity_checks
from fsr_models.evaluation.features import feature_analysis, knn_accuracy
from fsr_models.evaluation.plot import plot_curve
from fsr_models.evaluation.protocol import (
    ATTACKS,
    WHITE_BOX,
    attack_settings,
    evaluate_attacks,
    pgd_settings,
    robustness_curve,
    run_attack,
)
from fsr_models.evaluation.report import (
    COLUMNS,
    accuracy_table,
    column_title,
    eval_results,
    make_report,
    markdown,
    model_index,
)
