"""The papers' reported numbers (papers/reported_results.csv) next to what the kit measures.

Reported values are data, cited by paper and table; they are never typed into a notebook. The csv holds
one row per printed figure (paper, table, dataset, split, method, metric, value, note), rows in each
paper's own order, values as fractions written with the digits the paper prints (27.2 % -> 0.272, a
printed 0.470 stays 0.470), so the text of a value also says how precisely it was printed.
`aggregate_mismatches` uses that to tell a rounding difference from a printed aggregate that disagrees
with its own formula.
"""
from __future__ import annotations

import pandas as pd

from . import metrics
from .paths import project_dir

PAPERS = {
    "A": "Jeong et al., ABAW3: ensemble of multi-head cross attention networks (DAN)",
    "B": "Phan et al. (PRLAB), ABAW3: RegNetY-1.6GF + attention + transformer",
    "C": "Gera & Balasubramanian, ABAW 2020: SCAN + CCI",
    "D": "Cabacas-Maso et al., ABAW7: DDAMFN multi-task",
    "E": "Jeong, Hong et al. (IXLab, paper A's team), ABAW4 LSD: multi-task DAN + landmarks",
}


def _csv(as_text: bool = False) -> pd.DataFrame:
    """The csv as stored; `as_text` keeps each value as its printed text (e.g. "0.470")."""
    return pd.read_csv(project_dir() / "papers" / "reported_results.csv",
                       dtype={"value": str} if as_text else None, keep_default_na=not as_text)


def reported(paper: str | None = None, table: str | None = None) -> pd.DataFrame:
    """The reported rows, optionally of one paper and table, values as floats."""
    df = _csv()
    if paper is not None:
        df = df[df["paper"] == paper]
    if table is not None:
        df = df[df["table"] == table]
    if df.empty:
        raise KeyError(f"no reported results for paper={paper!r} table={table!r}")
    return df.reset_index(drop=True)


def side_by_side(paper: str, table: str, measured: dict[str, float], dataset: str, metric: str = "P_EXPR") -> pd.DataFrame:
    """One table: the paper's rows (on their dataset) and the kit's measured rows (on `dataset`)."""
    rep = reported(paper, table)
    rep = rep[rep["metric"] == metric]
    rows = [{"source": f"paper {paper}, {table}", "dataset": r.dataset, "method": r.method, metric: r.value}
            for r in rep.itertuples()]
    rows += [{"source": "fer_kit (this run)", "dataset": dataset, "method": m, metric: round(float(v), 4)}
             for m, v in measured.items()]
    return pd.DataFrame(rows)


def parameter_counts() -> pd.DataFrame:
    """Published model sizes (papers/parameter_counts.csv): figures quoted in papers and counts of the
    published code's modules, each with the kit model and arguments it corresponds to."""
    return pd.read_csv(project_dir() / "papers" / "parameter_counts.csv")


def parameter_comparison() -> pd.DataFrame:
    """Each published size beside the kit's count of the same configuration, built here and counted."""
    import json

    from .models import create_model
    from .models.summary import count_parameters

    rows, built = [], {}
    for r in parameter_counts().itertuples():
        key = (r.model, r.kwargs)
        if key not in built:
            model = create_model(r.model, **json.loads(r.kwargs))
            built[key] = count_parameters(model)
            del model
        kit = built[key]
        rows.append({"kit model": r.model, "arguments": r.kwargs, "published": r.source, "kind": r.kind,
                     "published parameters": int(r.parameters), "kit parameters": kit,
                     "kit - published": kit - int(r.parameters), "note": r.note})
    return pd.DataFrame(rows)


def paper_c_row(report: dict) -> dict[str, float]:
    """A 7-class validation report in paper C Table 2's columns."""
    return {"F1": report["p_expr"], "Accuracy": report["accuracy"], "ABAW2020": report["abaw2020"]}


def paper_d_row(report: dict, au_f1_mean: float | None = None) -> dict[str, float]:
    """A multi-task validation report in paper D's columns; `au_f1_mean` replaces the AU F1 (and P),
    e.g. with per-AU tuned thresholds."""
    au = report["au_f1_mean"] if au_f1_mean is None else au_f1_mean
    return {"CCC_V": report["ccc_valence"], "CCC_A": report["ccc_arousal"], "CCC_VA": report["ccc_mean"],
            "F1_expr": report["p_expr"], "F1_AU": au, "P": metrics.mtl_p(report["ccc_mean"], report["p_expr"], au)}


def side_by_side_wide(paper: str, table: str, measured: dict[str, dict[str, float]], dataset: str,
                      metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A table in the paper's own layout (one row per method, one column per metric, e.g. paper C Table 2:
    F1, Accuracy, Overall; paper D Table 3: CCC_V ... P): the paper's rows on their dataset, then the
    kit's measured rows on `dataset`. `metrics` None takes the table's own, in its order."""
    rep = reported(paper, table)
    metrics = tuple(dict.fromkeys(rep["metric"])) if metrics is None else metrics
    rep = rep[rep["metric"].isin(metrics)]
    wide = rep.pivot_table(index=["dataset", "method"], columns="metric", values="value", sort=False).reset_index()
    wide.insert(0, "source", f"paper {paper}, {table}")
    kit = pd.DataFrame([{"source": "fer_kit (this run)", "dataset": dataset, "method": m,
                         **{k: round(float(v[k]), 4) for k in metrics if k in v}} for m, v in measured.items()])
    return pd.concat([wide, kit], ignore_index=True)[["source", "dataset", "method", *metrics]]


def tables() -> list[tuple[str, str]]:
    """Every (paper, table) pair in the csv, papers A..E, each paper's tables in its own order
    (paper E reports its figures in prose, under "Section 3")."""
    df = _csv()
    pairs = dict.fromkeys(zip(df["paper"], df["table"]))
    return sorted(pairs, key=lambda pt: (pt[0], list(pairs).index(pt)))


def paper_table(paper: str, table: str) -> pd.DataFrame:
    """One table in the paper's own layout: a row per method in the paper's row order, the dataset and
    split, then a column per metric in the paper's column order (the kit's metric names, e.g. paper C's
    "Overall" is "ABAW2020"; the csv's note column says how each header was read)."""
    rep = reported(paper, table)
    methods = list(dict.fromkeys(rep["method"]))
    metric_order = list(dict.fromkeys(rep["metric"]))
    wide = rep.pivot(index="method", columns="metric", values="value").reindex(index=methods, columns=metric_order)
    where = rep.drop_duplicates("method").set_index("method").loc[methods, ["dataset", "split"]]
    out = pd.concat([where, wide], axis=1).reset_index()
    out.columns.name = None
    return out


# Aggregates the papers print next to their parts: (paper, aggregate, {part: weight}, formula).
# Papers A, B and E print one metric per row, so they have none.
AGGREGATES = (
    ("C", "ABAW2020", {"F1": 0.67, "Accuracy": 0.33}, "Overall = 0.67 F1 + 0.33 Acc (paper C Eq. 8)"),
    ("D", "CCC_VA", {"CCC_V": 0.5, "CCC_A": 0.5}, "CCC_VA = (CCC_V + CCC_A) / 2 (paper D Eq. 1, first term)"),
    ("D", "P", {"CCC_VA": 1.0, "F1_expr": 1.0, "F1_AU": 1.0}, "P = CCC_VA + F1_expr + F1_AU (paper D Eq. 1)"),
)


def _half_unit(text: str) -> float:
    """Half a unit of the last printed digit of a value written as text ("0.34" -> 0.005)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0 ** -decimals


def aggregate_check(tol: float | None = None) -> pd.DataFrame:
    """Every printed aggregate (AGGREGATES) beside the value recomputed from its printed parts.

    `allowed` is the difference that rounding can explain: with `tol` None, half a unit of the
    aggregate's last printed digit plus the weighted half-units of its parts (so a part printed with
    two digits leaves more room than one printed with three); a number `tol` replaces it with a fixed
    absolute tolerance. `mismatch` is |printed - recomputed| > allowed.
    """
    df = _csv(as_text=True)
    rows = []
    for paper, metric, parts, formula in AGGREGATES:
        sub = df[df["paper"] == paper]
        for (table, method), g in sub.groupby(["table", "method"], sort=False):
            text = dict(zip(g["metric"], g["value"]))
            if metric not in text or not all(p in text for p in parts):
                continue
            printed = float(text[metric])
            recomputed = sum(w * float(text[p]) for p, w in parts.items())
            allowed = (_half_unit(text[metric]) + sum(abs(w) * _half_unit(text[p]) for p, w in parts.items())
                       if tol is None else float(tol))
            diff = printed - recomputed
            rows.append({"paper": paper, "table": table, "method": method, "metric": metric,
                         "printed": printed, "recomputed": round(recomputed, 6), "difference": round(diff, 6),
                         "allowed": round(allowed, 6), "mismatch": abs(diff) > allowed + 1e-9,
                         "formula": formula})
    return pd.DataFrame(rows)


def aggregate_mismatches(tol: float | None = None) -> pd.DataFrame:
    """The printed aggregates that disagree with their own formula beyond rounding (see
    aggregate_check for `tol`). The csv keeps the printed values; its note column names each case."""
    checks = aggregate_check(tol)
    return checks[checks["mismatch"]].drop(columns="mismatch").reset_index(drop=True)
