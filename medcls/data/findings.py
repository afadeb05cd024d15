"""Multi-label findings: several yes/no findings per case (CheXpert, ChestX-ray14), with the CheXpert
convention of 1 present, 0 absent, -1 uncertain and blank not mentioned, and a stated policy for
what uncertain and blank findings mean in the loss and the metrics."""

from __future__ import annotations

import math

import numpy as np

from medcls.errors import ConfigError, DataError

PRESENT, ABSENT, UNCERTAIN, BLANK = 1.0, 0.0, -1.0, math.nan
VALUES = {
    "1": PRESENT, "1.0": PRESENT, "true": PRESENT, "yes": PRESENT, "positive": PRESENT,
    "0": ABSENT, "0.0": ABSENT, "false": ABSENT, "no": ABSENT, "negative": ABSENT,
    "-1": UNCERTAIN, "-1.0": UNCERTAIN, "u": UNCERTAIN, "uncertain": UNCERTAIN,
    "": BLANK,
}
# What a `|`-separated findings cell says when the case has none of the findings (ChestX-ray14).
NO_FINDINGS = {"", "no finding", "no findings", "none", "normal"}
POLICIES = ("positive", "negative", "ignore")  # what an uncertain (or blank) finding becomes


def finding_value(text: str, where: str) -> float:
    """A manifest cell as PRESENT, ABSENT, UNCERTAIN or BLANK (NaN)."""
    value = VALUES.get(str(text).strip().lower())
    if value is None:
        raise DataError(f"{where}: finding value {text!r} is not 1, 0, -1 (uncertain) or blank: "
                        "write one of those (the CheXpert convention)")
    return value


def findings_from_cell(text: str, names: list[str], where: str) -> dict[str, float]:
    """A `|`-separated findings cell ('Effusion|Mass') as PRESENT/ABSENT per finding."""
    given = {part.strip() for part in str(text).split("|")} - {""}
    if str(text).strip().lower() in NO_FINDINGS:
        given = set()
    unknown = given - set(names)
    if unknown:  # names come from the whole column, so this only guards direct calls
        raise DataError(f"{where}: unknown finding(s) {', '.join(sorted(unknown))}")
    return {name: PRESENT if name in given else ABSENT for name in names}


def from_matrix(values: np.ndarray, names: list[str] | None, where: str) -> list[dict[str, float]]:
    """An (N, L) array of 1 (present), 0 (absent), -1 (uncertain) or NaN (blank) as one findings
    dict per case, named by `names` (else finding_0, finding_1, ...)."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isin(values, (PRESENT, ABSENT, UNCERTAIN)) & ~np.isnan(values)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(f"{where}[{row}, {column}] = {float(values[row, column])!r}: multi-label arrays hold 1 (present), "
                        "0 (absent) or -1 (uncertain)")
    names = [str(n) for n in names] if names is not None else [f"finding_{j}" for j in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise DataError(f"{where} has {values.shape[1]} findings but {len(names)} names")
    return [dict(zip(names, row.tolist())) for row in values]


def cell_findings(cells: list[str]) -> list[str]:
    """Every finding named in a column of `|`-separated cells, sorted; 'No Finding' is not one."""
    names = set()
    for text in cells:
        if str(text).strip().lower() not in NO_FINDINGS:
            names.update(part.strip() for part in str(text).split("|") if part.strip())
    return sorted(names)


def parse_policies(spec: str, names: list[str], key: str = "uncertain") -> dict[str, str]:
    """`'ignore'` or `'ignore, Edema=positive, Atelectasis=positive'`: a default policy and
    per-finding overrides (the CheXpert paper's U-Ones for some findings, U-Ignore for others)."""
    default, per_finding = None, {}
    for item in (part.strip() for part in str(spec).split(",")):
        if not item:
            continue
        name, _, policy = item.rpartition("=")
        name, policy = name.strip(), policy.strip().lower()
        if policy not in POLICIES:
            raise ConfigError(f"{key} = {spec!r} is invalid: {policy!r} is not one of {', '.join(POLICIES)}")
        if not name:
            default = policy
        elif name not in names:
            raise ConfigError(f"{key} = {spec!r} names finding {name!r}, which the data does not have "
                              f"(findings: {', '.join(names)})")
        else:
            per_finding[name] = policy
    if default is None and len(per_finding) < len(names):
        raise ConfigError(f"{key} = {spec!r} gives no policy for every other finding: start with one of "
                          f"{', '.join(POLICIES)}, e.g. 'ignore, {names[0]}=positive'")
    return {name: per_finding.get(name, default) for name in names}


def targets(findings: list[dict[str, float]], names: list[str], uncertain: str, blank: str) -> np.ndarray:
    """(N, L) float32 training targets: 1 present, 0 absent, NaN ignored (left out of the loss and of
    every figure for that finding), uncertain and blank findings turned into one of those by their
    policies."""
    uncertain_policy = parse_policies(uncertain, names, "uncertain")
    blank_policy = parse_policies(blank, names, "blank_findings")
    replace = {"positive": PRESENT, "negative": ABSENT, "ignore": math.nan}
    out = np.empty((len(findings), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = np.array([f.get(name, BLANK) for f in findings], dtype=np.float64)
        unsure, unmentioned = column == UNCERTAIN, np.isnan(column)
        column[unsure] = replace[uncertain_policy[name]]
        column[unmentioned] = replace[blank_policy[name]]
        out[:, j] = column
    return out


def as_text(findings: dict[str, float]) -> str:
    """A case's findings as one readable label: 'Effusion|Mass', 'Edema?' for uncertain, or 'none'."""
    parts = [name + ("?" if value == UNCERTAIN else "") for name, value in findings.items()
             if value in (PRESENT, UNCERTAIN)]
    return "|".join(parts) or "none"
