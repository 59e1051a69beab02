"""Notebooks run headlessly with non-default parameters, and the runs' own outputs are checked."""
import json

import papermill as pm
import pytest

from fer_kit.paths import project_dir

NOTEBOOKS = project_dir() / "notebooks"


def run(name, tmp_path, **parameters):
    out = tmp_path / f"out-{name}"
    pm.execute_notebook(NOTEBOOKS / name, out, parameters=parameters, kernel_name="python3",
                        progress_bar=False, cwd=str(NOTEBOOKS))
    return out


@pytest.mark.notebooks
def test_04_small_run_writes_metrics_and_figures(tmp_path, tiny_synthetic):
    run("04_train_dan.ipynb", tmp_path, epochs=2, n_frames=600, seed=3, image_size=48, batch_size=16,
        out_dir=str(tmp_path / "run"), figures_dir=str(tmp_path / "figures"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["epochs"] == 2 and m["config"]["image_size"] == 48    # the parameters took effect
    assert m["data"]["train_frames"] > 0 and 0.0 <= m["best"]["p_expr"] <= 1.0
    assert len(m["best"]["per_class_f1"]) == 8
    assert 0.0 <= m["baselines"]["pixel_logistic_regression"]["p_expr"] <= 1.0
    for fig in ("04_samples", "04_learning_curves", "04_per_class_f1", "04_confusion"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 1000, fig


@pytest.mark.notebooks
def test_04_misspelt_parameter_fails_naming_it(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown parameter 'epoch' \(did you mean 'epochs'\?\)"):
        run("04_train_dan.ipynb", tmp_path, epoch=8)
