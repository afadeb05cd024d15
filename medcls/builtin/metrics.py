"""Built-in metrics: sensitivity, specificity and ROC AUC first, then the rest."""

from medcls import hookimpl
from medcls.evaluation import metrics as m


@hookimpl
def medcls_register_metrics(register):
    register("roc_auc", m.roc_auc, description="Area under the ROC curve", needs_threshold=False)
    register("sensitivity", m.sensitivity, description="True-positive rate (recall)", needs_threshold=True)
    register("specificity", m.specificity, description="True-negative rate", needs_threshold=True)
    register("ppv", m.ppv, description="Positive predictive value (precision)", needs_threshold=True)
    register("npv", m.npv, description="Negative predictive value", needs_threshold=True)
    register("accuracy", m.accuracy, description="Fraction of correct decisions", needs_threshold=True)
    register("balanced_accuracy", m.balanced_accuracy, description="Mean per-class recall",
             needs_threshold=True)
    register("f1", m.f1, description="Harmonic mean of PPV and sensitivity", needs_threshold=True)
    register("pr_auc", m.pr_auc, description="Average precision (area under the PR curve)",
             needs_threshold=False)
    register("brier", m.brier, description="Brier score: mean squared probability error",
             needs_threshold=False, higher_is_better=False)
