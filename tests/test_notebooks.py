"""Notebooks run headlessly with non-default parameters, and the runs' own outputs are checked."""
import json
import re

import nbformat
import papermill as pm
import pytest

from fer_kit.labels import AU_NAMES
from fer_kit.paths import project_dir
from fer_kit.schedules import FINAL

NOTEBOOKS = project_dir() / "notebooks"


def run(name, tmp_path, **parameters):
    out = tmp_path / f"out-{name}"
    pm.execute_notebook(NOTEBOOKS / name, out, parameters=parameters, kernel_name="python3",
                        progress_bar=False, cwd=str(NOTEBOOKS))
    return out


@pytest.mark.notebooks
def test_00_small_run_learns_and_explains_and_a_workshop_loads_it(tmp_path, tiny_synthetic, monkeypatch):
    """nbval would re-execute the quickstart's default run (about two minutes of CI); a small one shows the
    same cells work and learn. It is prepared as a workshop prepares its route, and run again as in class."""
    from fer_kit import run_notebook, workshop

    monkeypatch.setitem(workshop.ROUTES, "test", [("00_quickstart", 5)])
    monkeypatch.setitem(workshop.BREAKS, "test", 0)
    monkeypatch.setenv("FER_KIT_OUTPUT", str(tmp_path))
    # 3,000 frames for 3 epochs at 48 px (the default's frames and epochs, a smaller image): 1,200 frames for 2
    # epochs learnt on one CPU and stayed at the majority class's level on another (test P_EXPR 0.034 vs 0.036)
    params = dict(n_frames=3000, seed=3, epochs=3, image_size=48, out_dir=str(tmp_path / "run"),
                  figures_dir=str(tmp_path / "figures"))
    assert workshop.prepare("test", params) == ["00_quickstart"]
    out = tmp_path / "workshop" / "00_quickstart.ipynb"
    trained_at = (tmp_path / "run" / "best.pt").stat().st_mtime_ns
    in_class, _ = run_notebook.execute("00_quickstart", tmp_path / "class.ipynb", params, env={"FER_KIT_WORKSHOP": "1"})
    said = "".join(o.get("text", "") for c in nbformat.read(in_class, 4).cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "loaded, not trained again" in said and (tmp_path / "run" / "best.pt").stat().st_mtime_ns == trained_at
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["epochs"] == 3 and m["config"]["image_size"] == 48 and "test split" in m["protocol"]
    text = "".join(o.get("text", "") for c in nbformat.read(out, 4).cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    majority = float(re.search(r"most frequent class scores (\d\.\d+)", text).group(1))
    assert m["test"]["p_expr"] > majority, (m["test"], majority)
    assert re.search(r"\d+ of \d+ shown faces predicted correctly", text)
    for fig in ("00_faces", "00_predictions"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_04_small_run_writes_metrics_and_figures(tmp_path, tiny_synthetic):
    run("04_train_dan.ipynb", tmp_path, minutes=0.3, n_frames=600, seed=3, image_size=48, batch_size=16,
        out_dir=str(tmp_path / "run"), figures_dir=str(tmp_path / "figures"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["minutes"] == 0.3 and m["config"]["image_size"] == 48    # the parameters took effect
    assert m["schedule"]["last_lr"] == pytest.approx(m["config"]["lr"] * FINAL["onecycle"])   # ended on time
    # what it writes only: at 600 frames and 18 s DAN has not learned yet (seen with 2 epochs: test P_EXPR
    # 0.045, the majority class's level); that the default run learns is checked on its committed outputs
    assert m["data"]["train_frames"] > 0 and len(m["best"]["per_class_f1"]) == 8
    assert {"pixel_logistic_regression", "majority_class"} <= set(m["baselines"]) and "interval" in m["test"]
    for fig in ("04_samples", "04_learning_curves", "04_per_class_f1", "04_confusion"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_04_misspelt_parameter_fails_naming_it(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter 'epoch' \(did you mean 'epochs'\?\)"):
        run("04_train_dan.ipynb", tmp_path, epoch=8)


@pytest.mark.notebooks
def test_01_runs_on_an_mtl_only_root(tmp_path, mtl_only):
    out = run("01_dataset_statistics.ipynb", tmp_path, data_root=str(mtl_only), figures_dir=str(tmp_path / "figures"))
    text = out.read_text()
    assert "MTL Train_Set" in text and "this dataset ships no landmarks" in text
    for fig in ("01_class_shares", "01_frames_per_video", "01_va_density", "01_au_statistics", "01_samples_landmarks"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    assert not (tmp_path / "figures" / "01_imbalance_lesson.png").exists()


@pytest.mark.notebooks
def test_01_small_synthetic_run_draws_the_imbalance_lesson(tmp_path, cache_dir):
    out = run("01_dataset_statistics.ipynb", tmp_path, n_frames=600, seed=3, figures_dir=str(tmp_path / "figures"))
    assert "affwild2, class weights" in out.read_text()
    assert (tmp_path / "figures" / "01_imbalance_lesson.png").stat().st_size > 1000


NOTEBOOK_CONFIGS = [("00_quickstart.ipynb", "config.QuickstartConfig"),
                    ("01_dataset_statistics.ipynb", "config.StatsConfig"),
                    ("02_preprocessing_and_augmentation.ipynb", "config.AugmentConfig"),
                    ("03_architectures_and_losses.ipynb", "config.ArchitecturesConfig"),
                    ("04_train_dan.ipynb", "config.DanConfig"),
                    ("05_train_regnet_transformer.ipynb", "config.ClipConfig"),
                    ("06_train_scan_cci.ipynb", "config.ScanCCIConfig"),
                    ("07_train_ddamfn_multitask.ipynb", "config.MultitaskConfig"),
                    ("08_learning_from_synthetic_data.ipynb", "config.SyntheticShiftConfig"),
                    ("09_ensembles.ipynb", "config.EnsembleStudyConfig"),
                    ("10_gradcam_attention.ipynb", "explain.ExplainConfig"),
                    ("11_reproduce_paper_tables.ipynb", "reproduce.ReproduceConfig")]


@pytest.mark.parametrize("name,cls", NOTEBOOK_CONFIGS)
def test_every_notebook_reads_its_parameters_through_its_config(name, cls):
    """The cell after the parameters hands every parameter to the notebook's config class, which is
    what makes a misspelt or unknown one stop the run naming it."""
    import nbformat

    cells = [c for c in nbformat.read(NOTEBOOKS / name, 4).cells if c.cell_type == "code"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    assert f"params.config({cls.split('.')[1]})" in cells[at + 1].source, cells[at + 1].source
    assert "NotebookParams(globals())" in "".join(c.source for c in cells[:at])


@pytest.mark.parametrize("name,cls", NOTEBOOK_CONFIGS)
def test_parameter_cell_defaults_are_the_config_defaults(name, cls):
    """The CLI and the notebook must mean the same run when given the same (or no) parameters, and
    papermill must see every parameter (its parser skips a line whose comment holds ";" or "=", which
    then disappears from `papermill --help-notebook`)."""
    import ast
    import importlib
    from dataclasses import fields

    import nbformat

    module, _, klass = cls.partition(".")
    params = pm.inspect_notebook(NOTEBOOKS / name)
    cell = next(c for c in nbformat.read(NOTEBOOKS / name, 4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [line.split(":")[0].split("=")[0].strip() for line in cell.source.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert sorted(params) == sorted(assigned), set(assigned) ^ set(params)
    defaults = {f.name: f.default for f in fields(getattr(importlib.import_module(f"fer_kit.{module}"), klass))}
    for p in params.values():
        assert p["name"] in defaults, p["name"]
        value = ast.literal_eval(p["default"])
        assert value == defaults[p["name"]], (p["name"], value, defaults[p["name"]])


@pytest.mark.notebooks
def test_02_runs_on_an_mtl_only_root(tmp_path, mtl_only):
    out = run("02_preprocessing_and_augmentation.ipynb", tmp_path, data_root=str(mtl_only), n_batches=3,
              figures_dir=str(tmp_path / "figures"))
    text = out.read_text()
    assert "no landmarks in this dataset" in text and "Haar cascade found a face in" in text
    for fig in ("02_crop_align_detect", "02_augmentation_recipes", "02_mixup", "02_sampled_classes", "02_bagging_overlap"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_03_traces_the_chosen_models_and_draws_every_loss(tmp_path):
    out = run("03_architectures_and_losses.ipynb", tmp_path, models="test_dan,regnet_transformer", clip_length=3,
              toy_steps=20, figures_dir=str(tmp_path / "figures"))
    text = out.read_text()
    assert "1x3x888" in text and "2x512x4x4" in text          # the clip of 3 frames; test_dan at 112 px
    assert "LocalGlobalAttentionBranch" not in text            # models not asked for are not traced
    for fig in ("03_patch_grids", "03_focal", "03_affinity", "03_partition", "03_ccc_vs_mse", "03_attention_diversity"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


def test_03_unknown_model_name_fails_naming_it():
    """What notebook 03's config cell raises (a kernel per error message cost ~12 s of CI each: notebook
    04's misspelt-parameter test runs the path through papermill, and every notebook takes that path,
    test_every_notebook_reads_its_parameters_through_its_config)."""
    from fer_kit.config import ArchitecturesConfig, NotebookParams

    namespace = {}
    params = NotebookParams(namespace)
    namespace["models"] = "dan,scan_ccci"                      # as papermill's injected cell would
    with pytest.raises(ValueError, match=r"unknown model 'scan_ccci' \(did you mean 'scan_cci'\?\)"):
        params.config(ArchitecturesConfig)


@pytest.mark.notebooks
def test_07_main_run_learns_every_task(tmp_path, tiny_synthetic):
    """The main run alone (compare=False: the four comparison runs would double CI's share of this
    notebook); 600 frames did not beat the untrained network's P in 2 epochs, 1200 (the default) do."""
    run("07_train_ddamfn_multitask.ipynb", tmp_path, n_frames=1200, compare=False, out_dir=str(tmp_path / "run"),
        figures_dir=str(tmp_path / "figures"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["task"] == "mtl" and m["config"]["image_size"] == 64
    best = m["best"]
    assert best["p_mtl"] == pytest.approx(best["ccc_mean"] + best["p_expr"] + best["au_f1_mean"])
    assert best["p_mtl"] > m["at_init"]["p_mtl"] and best["p_mtl"] > m["baselines"]["trivial"]["p_mtl"]
    # the threshold study ran on the chosen epoch's weights and the split it was chosen on: at 0.5 it
    # scores exactly that epoch's recorded AU F1; its thresholds are one per AU, from the grid
    study = m["au_thresholds"]
    assert study["same_frames"]["fixed"] == pytest.approx(best["au_f1_mean"], abs=1e-6), (study["same_frames"], best)
    assert list(study["thresholds"]) == list(AU_NAMES) and all(0 < t < 1 for t in study["thresholds"].values())
    assert m["comparisons"] == {}
    for fig in ("07_learning_curves", "07_per_class_f1", "07_va_scatter", "07_au_thresholds"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_05_small_run_learns_per_frame_and_over_clips(tmp_path, tiny_synthetic):
    run("05_train_regnet_transformer.ipynb", tmp_path, n_frames=2600, seed=3, epochs=4, clip_length=8, image_size=48,
        variants="combine", out_dir=str(tmp_path / "frame"), figures_dir=str(tmp_path / "figures"))
    m = json.loads((tmp_path / "05_combine" / "metrics.json").read_text())
    assert m["config"]["clip_length"] == 8 and m["config"]["init_from"].endswith("frame/best.pt")
    assert set(m["variants"]) == {"combine"} and "test split" in m["protocol"]   # the paper's model (CI time)
    for score in (m["per_frame"]["p_expr"], m["test"]["p_expr"]):      # both on the test split
        assert score > m["at_init"]["p_expr"] and score > m["baselines"]["majority_class"]["p_expr"]
    hidden = m["hidden_frames"]["hidden"]                                # the notebook's question, answered
    assert hidden["gain"]["verdict"] in ("better", "worse", "within the noise")
    assert hidden["gain"]["gain"] == pytest.approx(hidden["combine"]["value"] - hidden["per frame"]["value"])
    for fig in ("05_model_scores", "05_timeline", "05_learning_curves", "05_per_class_f1"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_08_small_run_learns_its_style_and_measures_the_shift(tmp_path, tiny_synthetic):
    run("08_learning_from_synthetic_data.ipynb", tmp_path, n_frames=2400, seed=3, epochs=4, image_size=48, compare=False,
        out_dir=str(tmp_path / "run"), figures_dir=str(tmp_path / "figures"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["style"] == "cartoon" and m["config"]["val_style"] == "photo"
    # the epoch is chosen on the shifted style, where a small run sits near chance, so the chosen epoch can be
    # an early one: on 1,500 frames for 3 epochs the same-style score of the chosen epoch cleared the floor by
    # 0.01-0.17 over seeds 3-5 (a rounding change moved seed 3 from 0.26 to 0.13). On 2,400 frames for 4
    # epochs seeds 3-5 cleared it by 0.13, 0.17 and 0.26. The learning is asserted on the training style;
    # across the shift only that it is measured on both splits
    floor = max(m["at_init"]["lsd_mean_f1"], m["baselines"]["majority_class"]["lsd_mean_f1"])
    assert m["in_domain"]["lsd_mean_f1"] > floor + 0.1, (m["in_domain"], floor)
    assert 0 <= m["best"]["lsd_mean_f1"] <= 1 and 0 <= m["test"]["lsd_mean_f1"] <= 1
    assert m["test"]["interval"] and m["test"]["landmark_frames"] > 0
    assert m["test"]["landmark_nme"] < 1 and "no_landmarks" not in m
    for fig in ("08_domains", "08_domain_gap", "08_landmarks", "08_learning_curves"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_09_small_run_fills_paper_a_table_and_bags_paper_e(tmp_path, tiny_synthetic):
    out = run("09_ensembles.ipynb", tmp_path, n_frames=900, seed=3, epochs=2, members=2, fraction=0.5,
              pretrain_frames=900, pretrain_epochs=2, lsd_members=2, lsd_epochs=1,
              out_dir=str(tmp_path / "ens"), figures_dir=str(tmp_path / "figures"))
    m = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    rows = {r["model"]: r for r in m["table3"]}
    assert m["config"]["members"] == 2 and m["config"]["epochs"] == 2            # the parameters took effect
    assert {"DAN Scratch", "DAN TL", "DAN Weak Ensemble TL (soft)", "DAN Ensemble: all 4 models (soft)"} <= set(rows)
    # a 2-epoch run at 48 px sits near the floor, where one run can land either side of the majority class:
    # the better single model must clear it. Members fine-tuned for 2 epochs on half the videos often have
    # not (seen: the ensemble of all four at 0.021 against 0.043): the notebook counts them, from this run
    assert max(rows["DAN TL"]["score"], rows["DAN Scratch"]["score"]) > m["majority_class"], rows
    above = sum(s > m["majority_class"] for s in m["member_scores"])
    assert f"{above} of 2 members score above always predicting the majority class" in out.read_text()
    for r in rows.values():
        assert r["low"] <= r["score"] <= r["high"]
    assert len(m["combiners"]) == 6 and len(m["lsd"]["table"]) == 6                # 2 groups x 3 combiners
    for name in ("scratch", "transfer", "member_0", "lsd/member_1"):
        assert (tmp_path / "ens" / name / "best.pt").exists(), name
    for fig in ("09_table3", "09_per_class_f1", "09_diversity"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


def test_04_committed_default_run_beat_the_majority_class_beyond_its_interval():
    """Notebook 04's saved outputs are the README's main job: its default run must have learned, i.e. the
    lower end of DAN's 95% test interval sits clear of the majority class (a stale or broken run fails)."""
    nb = nbformat.read(NOTEBOOKS / "04_train_dan.ipynb", 4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    dan = re.search(r"DAN \(epoch \d+\):\s+P_EXPR (\d\.\d+) \[(\d\.\d+), (\d\.\d+)\]", text)
    majority = re.search(r"majority class:\s+P_EXPR (\d\.\d+)", text)
    assert dan and majority, "notebook 04 has no saved summary: re-execute it (python -m fer_kit.run_notebook 04)"
    score, low, high = map(float, dan.groups())
    assert low <= score <= high and low > float(majority.group(1)) + 0.1, (dan.group(0), majority.group(0))
    assert "test split" in text and "epoch 3:" in text          # the defaults' three epochs, reported on test


# cells of the nbval-run notebooks that print text but are not compared, each with its reason
NOT_COMPARED = {
    "toys.affinity_toy(": "a trained toy: 150 Adam steps of float sums, whose last digits may differ between CPUs",
    "toys.partition_toy(": "a trained toy (as above)",
    "toys.attention_diversity_toy(": "a trained toy (as above)",
    'print("figures:"': "lists the files of the output folder, which other runs share",
}


def test_nbval_compares_every_cell_that_prints_a_result(pytestconfig):
    """nbval re-executes every notebook that pyproject's addopts do not --ignore (01-03), with --nbval-lax,
    which compares only the cells marked NBVAL_CHECK_OUTPUT: a cell that prints numbers and is not marked
    is executed but never checked. Timings are sanitised (tests/nbval_sanitize.cfg), not left out."""
    ignored = {NOTEBOOKS.parent / p for p in pytestconfig.getoption("ignore") or []}
    checked = [p for p in sorted(NOTEBOOKS.glob("*.ipynb")) if p not in ignored]
    assert checked and ignored & set(NOTEBOOKS.glob("*.ipynb")), "the --ignore options did not resolve"
    unmarked = []
    for path in checked:
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type != "code" or "NBVAL_CHECK_OUTPUT" in cell.source:
                continue
            prints = any(o.output_type == "stream" and o.name == "stdout" or
                         "text/html" in o.get("data", {}) or
                         ("text/plain" in o.get("data", {}) and "image/png" not in o.data) for o in cell.outputs)
            if prints and not any(key in cell.source for key in NOT_COMPARED):
                unmarked.append(f"{path.name}: {cell.source.splitlines()[0]}")
    assert not unmarked, f"cells print results that nbval never compares: {unmarked}"


@pytest.mark.parametrize("name", [n for n, _ in NOTEBOOK_CONFIGS])
def test_every_notebook_opens_with_objectives_and_its_measured_time(name):
    from fer_kit import workshop

    cell = nbformat.read(NOTEBOOKS / name, 4).cells[1]
    assert cell.cell_type == "markdown" and cell.source.startswith("**After this notebook you can**")
    assert cell.source.count("\n- ") >= 2
    took = float(re.search(r"its default run took (\d+\.\d) min", cell.source).group(1))
    measured = workshop.committed_minutes(name[:-len(".ipynb")])       # papermill's record of the saved run
    assert abs(took - measured) <= max(0.5, 0.25 * measured), (took, measured)
    planned = [m for route in workshop.ROUTES for step in workshop.steps(route) for n, m in step
               if n == name[:-len(".ipynb")]]
    if planned:
        assert f"plan {max(planned)} min" in cell.source


def test_the_workshop_routes_fit_their_time_and_run_in_order():
    from fer_kit import workshop

    assert workshop.class_minutes("3h") <= 180 and workshop.class_minutes("90min") <= 90
    names = {n for n, _ in NOTEBOOK_CONFIGS}
    for route in workshop.ROUTES:
        order = workshop.notebooks(route)
        assert {f"{n}.ipynb" for n in order} <= names and order == sorted(order)   # later notebooks load earlier runs
    assert "prepare: about" in workshop.plan("3h")


@pytest.mark.parametrize("name", [n for n, _ in NOTEBOOK_CONFIGS])
def test_exercises_have_hidden_solutions_that_compute_their_answers(name):
    """Every notebook ends with exercises, each with a solution cell after it: collapsed in JupyterLab,
    tagged "solution", and compared by nbval (01-03) or run by the papermill tests (the others)."""
    cells = nbformat.read(NOTEBOOKS / name, 4).cells
    start = next((k for k, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises")),
                 None)
    assert start is not None, f"{name} has no '## Exercises' cell"
    assert all(c.cell_type == "code" and "solution" in c.metadata.get("tags", []) for c in cells[start + 1:]), \
        "the exercises and their solutions end the notebook"
    asked = len(re.findall(r"^\d+\. ", cells[start].source, re.M))
    solutions = [c for c in cells[start + 1:] if "solution" in c.metadata.get("tags", [])]
    assert asked >= 2 and len(solutions) == asked
    for c in solutions:
        assert c.cell_type == "code" and c.metadata["jupyter"]["source_hidden"]
        assert c.source.startswith("# NBVAL_CHECK_OUTPUT") and c.outputs, "a solution shows its computed answer"
