"""Ensembles (`medcls train --ensemble N`): N members trained on bootstrap resamples of the training
patients (bagging) with their own seeds, on one fixed split; the ensemble averages their
probabilities and is scored, saved, exported and reported like a single model, beside its members."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from medcls.core.engine import FitResult
from medcls.core.execution import choose_execution, resolve_device
from medcls.core.models import Ensemble
from medcls.core.runs import load_model
from medcls.logs import logger
from medcls.reports.report import format_value, spread
from medcls.workflows.plan import make_plan, write_plan
from medcls.workflows.tracking import ending_if_interrupted, finish_trackers, open_trackers
from medcls.workflows.train import finish_run, open_run, train


def bootstrap_rows(rows: np.ndarray, patients: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A bagging resample: whole patients drawn with replacement (images of one patient stay together)."""
    groups = np.asarray(patients if patients is not None else rows.astype(str), dtype=object)
    unique = np.unique(groups)
    drawn = rng.choice(len(unique), size=len(unique), replace=True)
    members = {g: rows[groups == g] for g in unique}
    return np.concatenate([members[unique[i]] for i in drawn])


def train_ensemble(config, registries, *, progress_factory=None, given: set | None = None) -> dict:
    """`given`: the keys the user set (the plan's record of whose each choice is)."""
    started = time.perf_counter()
    requested = config
    backbones = [b.strip() for b in (config.ensemble_backbones or config.backbone).split(",") if b.strip()]
    for name in backbones:
        registries["backbones"].get(name)  # a misspelled member fails before any data is read
    # One split for every member: the members differ by their seeds, not by their test sets.
    config = dataclasses.replace(config, split_seed=config.seed if config.split_seed is None else config.split_seed)
    config, out, data = open_run(config, registries, split=True)
    write_plan(make_plan(requested, registries, given, cases=data.cases, multi_label=data.multi_label,
                         resolved=config), out)
    train_rows = data.rows("train")
    trackers = open_trackers(config, registries, out)  # each member is logged as a nested run of the ensemble
    with ending_if_interrupted(trackers):
        members, member_results, member_backbones = [], [], []
        for index in range(config.ensemble):
            backbone = backbones[index % len(backbones)]
            rng = np.random.default_rng([config.seed, index])
            rows = bootstrap_rows(train_rows, data.patients(train_rows), rng) if config.bagging else train_rows
            logger.info(f"member {index + 1} of {config.ensemble}: {backbone}, seed {config.seed + index}, "
                f"{len(rows)} training images{' (bootstrap resample of patients)' if config.bagging else ''}")
            member_config = dataclasses.replace(config, ensemble=0, seed=config.seed + index, backbone=backbone,
                                                out=str(out / f"member-{index + 1}"))
            summary = train(member_config, registries, progress_factory=progress_factory, data=data,
                            train_rows=rows, parent_trackers=trackers, given=given)
            member_backbones.append(backbone)
            member_results.append({"member": index + 1, "backbone": backbone, "test": summary["results"]["test"],
                                   "intervals": summary["intervals"]["test"]})
            members.append(load_model(out / f"member-{index + 1}", registries)[0])
        device = resolve_device(config.device)
        ensemble = Ensemble(members, multi_label=data.multi_label).eval()
        execution = choose_execution(device, members[0], config.precision, config.channels_last)
        ensemble = execution.prepare(ensemble)
        summary = finish_run(config, registries, data, ensemble, execution, FitResult(), out,
                             rows={"train": train_rows, "val": data.rows("val"), "test": data.rows("test")},
                             facts={"weights_origin": "ensemble of the members' runs", "device": str(device),
                                    "started": started, "policy_params": {}},
                             extra_info={"ensemble": {"members": config.ensemble, "bagging": config.bagging,
                                                      "backbones": member_backbones}},
                             extend=lambda doc: members_section(doc, member_results),
                             extra_metrics={"each": member_results, "spread": spread([m["test"] for m in member_results])})
        summary["members"] = member_results
        summary["spread"] = spread([m["test"] for m in member_results])
        finish_trackers(trackers, summary, out)
    return summary


def members_section(doc, member_results: list[dict]) -> None:
    """Each member's test figures beside the ensemble's (given in the report above)."""

    doc.heading("Ensemble members (test split)")
    names = ("roc_auc", "sensitivity", "specificity", "accuracy")
    rows = [[f"member {m['member']} ({m.get('backbone', '')})", *(format_value(m["test"].get(n), m["intervals"].get(n)) for n in names)]
            for m in member_results]
    figures = spread([m["test"] for m in member_results], names)
    rows.append(["members mean ± sd", *(f"{figures[n]['mean']:.3f} ± {figures[n]['sd']:.3f}" if n in figures else "-"
                                       for n in names)])
    doc.table(["model", *names], rows)
    doc.paragraph("The ensemble averages the members' probabilities; its figures are the report's main table. "
                  "An ensemble reduces variance when it beats the members' mean and their spread is wide.")
