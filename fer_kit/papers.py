"""The papers' reported numbers (papers/reported_results.csv) next to what the kit measures.

Reported values are data, cited by paper and table; they are never typed into a notebook.
"""
from __future__ import annotations

import pandas as pd

from . import metrics
from .paths import project_dir

PAPERS = {
    "A": "Jeong et al., ABAW3: ensemble of multi-head cross attention networks (DAN)",
    "B": "PRLAB, ABAW3: RegNetY-1.6GF + attention + transformer",
    "C": "Gera & Balasubramanian, ABAW 2020: SCAN + CCI",
    "D": "Cabacas-Maso et al., ABAW7: DDAMFN multi-task",
    "E": "Hong et al., ABAW4 LSD: multi-task DAN + landmarks",
}


def reported(paper: str | None = None, table: str | None = None) -> pd.DataFrame:
    df = pd.read_csv(project_dir() / "papers" / "reported_results.csv")
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
