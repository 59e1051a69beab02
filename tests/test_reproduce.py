"""Notebook 11: every reported row has a recipe or a reason; run folders fill the kit column; the notebook
runs end to end with tiny self-runs."""
import ast
import json
from dataclasses import fields

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from fer_kit import papers, reproduce
from fer_kit.config import MultitaskConfig, TrainConfig
from fer_kit.paths import project_dir
from fer_kit.reproduce import JOBS, RECIPES, ReproduceConfig

NOTEBOOK = project_dir() / "notebooks" / "11_reproduce_paper_tables.ipynb"


def test_every_reported_row_has_a_recipe_or_a_reason():
    reported = set(zip(*(papers.reported()[c] for c in ("paper", "table", "method"))))
    keys = [(r.paper, r.table, r.method) for r in RECIPES]
    assert len(keys) == len(set(keys)), "a row has two recipes"
    assert set(keys) == reported
    for r in RECIPES:
        if r.runnable:
            assert r.sources or r.self_run, r.method
        else:
            assert len(r.reason) > 20 and not r.sources and r.self_run is None, r.method


def test_every_table_is_covered_and_the_obvious_rows_map():
    assert {(r.paper, r.table) for r in RECIPES} == set(papers.tables())
    runnable = {(r.paper, r.table, r.method): r.runnable for r in RECIPES}
    assert not any(ok for (p, t, _), ok in runnable.items() if (p, t) == ("A", "Table 4"))   # a test leaderboard
    assert all(ok for (p, t, _), ok in runnable.items() if p == "D")
    assert runnable[("A", "Table 3", "DAN (ResNet50) Scratch")] and runnable[("C", "Table 2", "ResNet-50")]
    assert runnable[("C", "Table 4", "SCAN+CCI pretrained on none")]
    assert not runnable[("C", "Table 4", "SCAN+CCI pretrained on VGGFace2")]
    assert not runnable[("E", "Section 3", "Challenge baseline")]
    assert runnable[("E", "Section 3", "DAN + landmark multi-task ensemble (preliminary)")]


def test_patterns_compare_rows_that_exist():
    keys = {(r.paper, r.table, r.method) for r in RECIPES if r.runnable}
    for paper, ta, a, tb, b, metric, _ in reproduce.PATTERNS:
        assert (paper, ta, a) in keys and (paper, tb, b) in keys, (a, b)
        assert metric in set(papers.reported(paper, ta)["metric"]), metric


def test_sources_name_real_files_and_self_runs_never_touch_a_notebooks_folder():
    for r in RECIPES:
        for s in r.sources:
            assert JOBS[s.job].notebook and set(s.roles) <= set(JOBS[s.job].files), r.method
        if r.self_run:
            assert JOBS[r.self_run.job].train and set(r.self_run.roles) <= set(JOBS[r.self_run.job].self_files)
    for job in JOBS.values():
        assert all(f.startswith("runs/11_") for f in job.self_files.values()), job.key
        assert not set(job.files.values()) & set(job.self_files.values())


def test_config_rejects_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch' \(did you mean 'epochs'\?\)"):
        ReproduceConfig.from_params({"epoch": 3})
    with pytest.raises(ValueError, match="unknown paper 'F'"):
        ReproduceConfig(papers="A,F")
    with pytest.raises(ValueError, match="unknown preset"):
        ReproduceConfig(preset="gpu")
    assert ReproduceConfig(papers="C, E").paper_list == ["C", "E"]


def test_parameter_cell_defaults_are_the_config_defaults():
    defaults = {f.name: f.default for f in fields(ReproduceConfig)}
    params = pm.inspect_notebook(NOTEBOOK)
    assert set(params) == set(defaults)
    for p in params.values():
        assert ast.literal_eval(p["default"]) == defaults[p["name"]], p["name"]


# --------------------------------------------------------------------------- run folders as notebooks write them
def _write(root, rel, doc):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _d_report(v):
    return {"score": 1.0, "ccc_valence": v, "ccc_arousal": v / 2, "ccc_mean": 0.75 * v, "p_expr": 0.3, "au_f1_mean": 0.4,
            "p_mtl": 0.75 * v + 0.7}


def fake_notebook_runs(root, with_a_and_d_only=False):
    """metrics.json / ensemble.json of notebooks 04-09 in their own layouts, with recognisable numbers."""
    syn = {"source": "synthetic faces (sqrt, photo, seed 3)"}
    d_cfg = MultitaskConfig(n_frames=600, seed=3, epochs=1, freeze_epochs=0, max_batches=2, progress=False).train_config()
    thresholds = {"same_frames": {"fixed": 0.4, "tuned": 0.45}, "held_out": {"fixed": 0.4, "tuned": 0.42}}
    d = "runs/07_train_ddamfn_multitask"
    _write(root, f"{d}/metrics.json", {"best": _d_report(0.5), "config": d_cfg.to_dict(), "data": syn,
                                        "au_thresholds": thresholds})
    _write(root, f"{d}_heads_only/metrics.json", {"best": _d_report(0.2), "data": syn, "au_thresholds": thresholds,
                                                  "config": d_cfg.replace(freeze_epochs=1).to_dict()})
    for task, best in (("va", {"ccc_valence": 0.6, "ccc_arousal": 0.4, "ccc_mean": 0.5}), ("expr", {"p_expr": 0.35}),
                       ("au", {"au_f1_mean": 0.41})):
        _write(root, f"{d}_{task}_only/metrics.json", {"best": {"score": 0.1, **best}, "data": syn,
                                                        "config": d_cfg.replace(task=task).to_dict(),
                                                        **({"au_thresholds": thresholds} if task == "au" else {})})
    dan = TrainConfig(n_frames=600, seed=3, progress=False)
    _write(root, "runs/04_train_dan/metrics.json", {"best": {"p_expr": 0.404}, "config": dan.to_dict(), "data": syn})
    table3 = [{"model": m, "kind": "single model", "score": s, "low": s - 0.1, "high": s + 0.1}
              for m, s in (("DAN Scratch", 0.301), ("DAN TL", 0.302), ("DAN Weak Ensemble TL (soft)", 0.303),
                           ("DAN Ensemble: all 5 models (soft)", 0.305))]
    lsd_bagging = {} if with_a_and_d_only else {"lsd": {"table": [{"model": "soft voting", "score": 0.606}]}}
    _write(root, "runs/09_ensembles/ensemble.json", {"table3": table3, "config": {**dan.to_dict(), "members": 3},
                                                     **lsd_bagging})
    if with_a_and_d_only:
        return
    c7 = TrainConfig(n_frames=600, seed=3, num_classes=7, model="scan_cci_small", preset="laptop_c", progress=False)
    _write(root, "runs/06_train_scan_cci/metrics.json",
           {"best": {"p_expr": 0.2, "accuracy": 0.5, "abaw2020": 0.299}, "config": c7.to_dict(), "data": syn})
    _write(root, "runs/06_resnet_baseline/metrics.json",
           {"best": {"p_expr": 0.1, "accuracy": 0.4, "abaw2020": 0.199},
            "config": c7.replace(model="resnet_classifier").to_dict(), "data": syn})
    _write(root, "runs/05_combine/metrics.json", {"best": {"p_expr": 0.222}, "config": dan.to_dict(), "data": syn})
    lsd = TrainConfig(n_frames=600, seed=3, model="dan_landmarks", num_classes=6, style="cartoon", val_style="photo",
                      preset="laptop_e", progress=False)
    _write(root, "runs/08_learning_from_synthetic_data/metrics.json",
           {"best": {"lsd_mean_f1": 0.5}, "config": lsd.to_dict(), "data": syn})


def test_notebook_runs_fill_the_kit_column_without_training(tmp_path, monkeypatch, tiny_synthetic):
    monkeypatch.setenv("FER_KIT_OUTPUT", str(tmp_path))
    fake_notebook_runs(tmp_path)
    rep = reproduce.collect(ReproduceConfig(self_runs=False), log=lambda _: None)
    rows = rep.rows.set_index(["paper", "table", "method"])
    assert rep.rows.loc[rep.rows["status"] == "self-run"].empty and not (tmp_path / "runs" / "11_logs").exists()
    # every runnable row is filled from a notebook's run, except D's heads-only single-task models (no notebook)
    empty = rep.rows[rep.rows["status"] == "not run"]
    assert set(empty["method"]) == {"DAN (ResNet50) Weak Ensemble Scratch", "Custom classifier: heads only (single-task)",
                                    "Custom classifier: heads only (single-task) + AU thresholds"}
    assert "has no such model" in rows.loc[("A", "Table 3", "DAN (ResNet50) Weak Ensemble Scratch"), "reason"]
    assert "self_runs is False" in rows.loc[("D", "Table 4", "Custom classifier: heads only (single-task)"), "reason"]
    assert (rep.rows["status"] == "notebook run").sum() == 17
    cells = rep.cells.set_index(["paper", "table", "method", "metric"])
    # paper A Table 3 takes notebook 09's Scratch (same data as its ensembles), not notebook 04's
    assert cells.loc[("A", "Table 3", "DAN (ResNet50) Scratch", "P_EXPR"), "kit"] == 0.301
    assert cells.loc[("A", "Table 3", "DAN (ResNet50) Ensemble", "P_EXPR"), "kit_text"] == \
        "0.305 (synthetic faces, runs/09_ensembles)"
    assert cells.loc[("C", "Table 2", "ResNet-50", "ABAW2020"), "kit"] == 0.199
    assert cells.loc[("C", "Table 4", "SCAN+CCI pretrained on none", "F1"), "kit"] == 0.2
    assert cells.loc[("E", "Section 3", "DAN + landmark multi-task ensemble (preliminary)", "LSD_F1"), "kit"] == 0.606
    assert cells.loc[("D", "Table 3", "DDAMFN fine-tuned (multi-task) + AU thresholds", "F1_AU"), "kit"] == 0.45
    assert cells.loc[("D", "Table 3", "DDAMFN fine-tuned (multi-task) + AU thresholds", "P"), "kit"] == \
        pytest.approx(0.375 + 0.3 + 0.45)
    single = ("D", "Table 4", "DDAMFN fine-tuned (single-task)")
    assert cells.loc[(*single, "CCC_V"), "kit"] == 0.6 and cells.loc[(*single, "F1_expr"), "kit"] == 0.35
    assert cells.loc[(*single, "P"), "kit"] == pytest.approx(0.5 + 0.35 + 0.41)
    assert rows.loc[single, "run folder"].count("runs/07_train_ddamfn_multitask_") == 3
    # the paper's layout: each metric as printed, then the kit's, then where the kit's came from
    t = reproduce.table(rep, "C", "Table 2")
    assert list(t.columns) == ["method", "dataset", "split", "F1", "F1 kit", "Accuracy", "Accuracy kit", "ABAW2020",
                               "ABAW2020 kit", "kit: dataset, run folder", "kit run"]
    assert t["ABAW2020"].tolist() == ["0.422", "0.465", ""] and t["ABAW2020 kit"].tolist()[:2] == ["0.199", "0.299"]
    # the last row is the floor: the majority class on the same data, in the same metrics
    floor, run = rep.floors[("C", "Table 2")]
    assert t["method"].iloc[-1] == "kit floor: majority class" and run.folder == "runs/06_resnet_baseline"
    assert floor["ABAW2020"] == pytest.approx(0.67 * floor["F1"] + 0.33 * floor["Accuracy"]) and floor["F1"] < 0.2
    d_floor = rep.floors[("D", "Table 3")][0]
    assert d_floor["CCC_VA"] == 0 and d_floor["P"] == pytest.approx(d_floor["F1_expr"] + d_floor["F1_AU"])
    assert t["kit: dataset, run folder"].iloc[0] == "synthetic faces, runs/06_resnet_baseline (notebook 06)"
    t4 = reproduce.table(rep, "A", "Table 4")
    assert t4["kit: dataset, run folder"].str.startswith("not run: ").all()
    pat = reproduce.patterns(rep).set_index("comparison")
    assert pat.loc["SCAN+CCI beats a plain ResNet-50", "same sign"] == "yes"
    assert pat.loc["SCAN+CCI beats a plain ResNet-50", "kit: a - b"] == pytest.approx(0.1)
    assert set(pat["kit rows above floor"]) <= {"yes", "no", "—"} and len(pat) == len(reproduce.PATTERNS)
    cov = reproduce.coverage(rep).set_index(["paper", "table"])
    assert cov.loc[("A", "Table 4"), "not runnable"] == 8 and cov["rows"].sum() == len(RECIPES)
    fig = reproduce.plot_paper(rep, "D", path=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000 and len(fig.axes) == 2


def test_ignoring_notebook_runs_leaves_rows_empty_with_a_reason(tmp_path, monkeypatch, tiny_synthetic):
    monkeypatch.setenv("FER_KIT_OUTPUT", str(tmp_path))
    fake_notebook_runs(tmp_path)
    rep = reproduce.collect(ReproduceConfig(self_runs=False, use_notebook_runs=False, papers="C"), log=lambda _: None)
    assert set(rep.rows["paper"]) == {"C"} and (rep.rows["status"] != "notebook run").all()
    assert rep.rows.loc[rep.rows["status"] == "not run", "reason"].str.contains("self_runs is False").all()


# --------------------------------------------------------------------------- the notebook, end to end
@pytest.mark.notebooks
def test_11_small_run_fills_every_runnable_row(tmp_path, monkeypatch, tiny_synthetic):
    """Notebooks 04, 07 and 09 (without paper E's bagging) have "run" (their files are faked, as the
    notebooks write them); 05, 06 and 08 have not, so notebook 11 trains B, C and E itself, plus paper D's heads-only
    single-task models, which no notebook trains."""
    out = tmp_path / "output"
    monkeypatch.setenv("FER_KIT_OUTPUT", str(out))       # the kernel inherits it
    fake_notebook_runs(out, with_a_and_d_only=True)
    executed = tmp_path / "11.ipynb"
    pm.execute_notebook(NOTEBOOK, executed, kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOK.parent),
                        parameters=dict(n_frames=600, seed=3, epochs=1, max_batches=2, figures_dir=str(tmp_path / "fig")))
    text = executed.read_text()
    for folder in ("runs/11_combine", "runs/11_scan_cci", "runs/11_resnet_baseline", "runs/11_lsd",
                   "runs/11_ddamfn_heads_only_au"):
        assert (out / folder / "metrics.json").exists(), folder
    assert not (out / "runs" / "11_ensembles").exists() and not (out / "runs" / "11_ddamfn_multitask").exists()
    assert "(self-run)" in text and "(notebook 07)" in text
    assert str(out) not in text          # outputs name run folders relative to the output folder
    rows = pd.read_csv(out / "runs" / "11_reproduction" / "rows.csv").set_index(["paper", "table", "method"])
    for r in RECIPES:     # the faked notebook 09 run has no weak ensemble from scratch (its default is TL)
        expected = ("not runnable" if not r.runnable else "not run" if r.method == "DAN (ResNet50) Weak Ensemble Scratch"
                    else "self-run" if r.paper in "BCE" or "(single-task)" in r.method and "heads only" in r.method
                    else "notebook run")
        assert rows.loc[(r.paper, r.table, r.method), "status"] == expected, r.method
    cells = pd.read_csv(out / "runs" / "11_reproduction" / "cells.csv")
    filled = cells[cells["kit"].notna()]
    assert filled["kit"].between(-1, 3).all() and filled["kit_text"].str.contains(r"\(synthetic faces").all()
    for paper in "ABCDE":
        assert (tmp_path / "fig" / f"11_paper_{paper}.png").stat().st_size > 1000, paper


def test_headline_gaps_measure_the_kit_against_the_paper_and_its_floor():
    cells = pd.DataFrame([
        {"paper": "A", "table": "Table 3", "method": "DAN", "metric": "P_EXPR", "reported": 0.33, "kit": 0.20},
        {"paper": "A", "table": "Table 3", "method": "Ensemble", "metric": "P_EXPR", "reported": 0.35, "kit": None},
        {"paper": "C", "table": "Table 2", "method": "SCAN", "metric": "F1", "reported": 0.37, "kit": 0.1},
        {"paper": "E", "table": "Section 3", "method": "bag", "metric": "LSD_F1", "reported": 0.71, "kit": 0.05}])
    rep = reproduce.Reproduction(cells=cells, rows=pd.DataFrame(), runs=pd.DataFrame(), config=None,
                                 floors={("A", "Table 3"): ({"P_EXPR": 0.05}, None), ("E", "Section 3"): None})
    out = reproduce.headline_gaps(rep)
    assert list(out["method"]) == ["DAN", "bag"]          # headline metrics with a kit value only
    assert out.loc[0, "kit_minus_paper"] == pytest.approx(-0.13) and out.loc[0, "kit_minus_floor"] == pytest.approx(0.15)
    assert np.isnan(out.loc[1, "floor"]) and np.isnan(out.loc[1, "kit_minus_floor"])


def test_the_floor_is_measured_on_the_split_the_kit_value_comes_from(monkeypatch):
    """Kit values are test-split scores where there is a test split; a floor from validation would put the
    two rows on different faces (here validation is all Neutral, the majority, and test is not)."""
    from fer_kit import metrics, train
    from fer_kit.data.table import DropReport, FrameTable
    from fer_kit.labels import EXPR_CLASSES

    def table(labels):
        labels = np.asarray(labels)
        return FrameTable([f"v{i}/{i:05d}.jpg" for i in range(len(labels))], labels,
                          np.array([f"v{i // 4}" for i in range(len(labels))]), EXPR_CLASSES, DropReport("test"))

    tr, val, test = table([0] * 6 + [1, 2, 3]), table([0] * 8), table([0, 0, 1, 1, 2, 3, 4, 5])
    run = reproduce.Found({"config": {"model": "dan"}}, "runs/x", "self-run")
    monkeypatch.setattr(train, "split_tables", lambda cfg: (tr, val, test, "synthetic"))
    majority = np.zeros(len(test.labels), int)
    assert reproduce.floor(run) == {"P_EXPR": metrics.expr_report(test.labels, majority, 8)["p_expr"]}
    monkeypatch.setattr(train, "split_tables", lambda cfg: (tr, val, None, "a root without test labels"))
    assert reproduce.floor(run) == {"P_EXPR": metrics.expr_report(val.labels, np.zeros(8, int), 8)["p_expr"]}


def test_paper_e_row_from_notebook_09_is_described_by_its_lsd_members(tmp_path, monkeypatch):
    """Notebook 09's ensemble.json holds paper A's DAN ensembles and paper E's bagging: the paper E row is
    described (and floored) by the LSD members' settings with the ensemble's seed, not by the DAN's."""
    monkeypatch.setenv("FER_KIT_OUTPUT", str(tmp_path))
    folder = tmp_path / "runs" / "09_ensembles"
    (folder / "lsd" / "member_0").mkdir(parents=True)
    (folder / "ensemble.json").write_text(json.dumps({
        "config": {"model": "dan", "backbone": "resnet18", "seed": 3, "image_size": 56, "epochs": 4, "members": 3},
        "table3": [], "lsd": {"table": [{"model": "soft voting", "score": 0.4}]}}))
    member = {"model": "dan_landmarks", "backbone": "resnet18", "seed": 4, "image_size": 80, "epochs": 2,
              "num_classes": 6, "style": "cartoon", "val_style": "photo",
              "init_from": "runs/09_ensembles/pretrain_cartoon/best.pt"}
    (folder / "lsd" / "member_0" / "metrics.json").write_text(json.dumps({"config": member}))
    recipe = next(r for r in RECIPES if r.paper == "E" and r.sources)
    values, runs = reproduce._try(recipe.sources[0], False, {})
    assert values == {"LSD_F1": 0.4} and runs[0].folder == "runs/09_ensembles/lsd"
    assert runs[0].config["seed"] == 3 and runs[0].config["num_classes"] == 6
    assert reproduce.describe(runs[0]) == "dan_landmarks resnet18, 80 px, 2 epochs, started from pretrain_cartoon"
    assert reproduce.dataset_label(runs[0]) == "synthetic faces, cartoon -> photo"
    (folder / "lsd" / "member_0" / "metrics.json").unlink()               # no members: the file as it is
    _, runs = reproduce._try(recipe.sources[0], False, {})
    assert runs[0].config["model"] == "dan" and runs[0].folder == "runs/09_ensembles"
