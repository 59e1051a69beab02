"""The papers' reported numbers (papers/reported_results.csv) next to what the kit measures.

Reported values are data, cited by paper and table; they are never typed into a notebook.
"""
from __future__ import annotations

import pandas as pd

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
