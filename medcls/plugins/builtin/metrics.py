"""Built-in metrics: sensitivity, specificity and ROC AUC first, then the rest.

Each binary metric also registers its vectorised bootstrap form (`vectorised`), which computes the
metric for a whole block of resamples at once, and how its multi-class value combines the
one-vs-rest binary values (`multiclass`: macro mean or sum), or, for the figures of the whole K x K
table (accuracy, balanced accuracy, MCC, top-class ECE), its multi-class form
(`vectorised_multiclass`); see `medcls.stats.bootstrap`.
"""

from medcls.plugins.hookspecs import hookimpl
from medcls.stats import metrics as m
from medcls.stats.bootstrap import WeightedBinary as W
from medcls.stats.bootstrap import WeightedMulticlass as M


@hookimpl
def medcls_register_metrics(register):
    def add(name, fn, description, needs_threshold, higher_is_better=True, multiclass=None):
        table = {} if multiclass else {"vectorised_multiclass": getattr(M, name)}  # a figure of the K x K table
        register(name, fn, description=description, needs_threshold=needs_threshold,
                 higher_is_better=higher_is_better, vectorised=getattr(W, name), multiclass=multiclass, **table)

    add("roc_auc", m.roc_auc, "Area under the ROC curve", False, multiclass="macro")
    add("sensitivity", m.sensitivity, "True-positive rate (recall)", True, multiclass="macro")
    add("specificity", m.specificity, "True-negative rate", True, multiclass="macro")
    add("ppv", m.ppv, "Positive predictive value (precision)", True, multiclass="macro")
    add("npv", m.npv, "Negative predictive value", True, multiclass="macro")
    add("accuracy", m.accuracy, "Fraction of correct decisions", True)
    add("balanced_accuracy", m.balanced_accuracy, "Mean per-class recall", True)
    add("f1", m.f1, "Harmonic mean of PPV and sensitivity", True, multiclass="macro")
    add("mcc", m.mcc, "Matthews correlation coefficient", True)
    add("pr_auc", m.pr_auc, "Average precision (area under the PR curve)", False, multiclass="macro")
    add("brier", m.brier, "Brier score: mean squared probability error", False, higher_is_better=False,
        multiclass="sum")
    add("ece", m.ece, "Expected calibration error (15 bins)", False, higher_is_better=False)
