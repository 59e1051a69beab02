import json
import os
import shutil

import nbformat
import numpy as np
import pytest

from fer_kit import compare, study
from fer_kit.run_notebook import notebook_path, tidy


def _frames(n_videos=40, per_video=10, seed=0):
    rng = np.random.default_rng(seed)
    videos = np.repeat([f"v{i}" for i in range(n_videos)], per_video)
    labels = np.repeat(rng.integers(0, 4, n_videos), per_video)
    return labels, videos, rng


def test_a_better_model_wins_beyond_the_noise_and_an_equal_one_does_not():
    labels, videos, rng = _frames()
    good = np.where(rng.random(len(labels)) < 0.9, labels, (labels + 1) % 4)
    noisy = np.where(rng.random(len(labels)) < 0.4, labels, rng.integers(0, 4, len(labels)))
    c = compare.paired(labels, good, noisy, videos, 4, names=("good", "noisy"))
    assert c["gain"]["verdict"] == "better" and c["gain"]["low"] > 0
    assert c["good"]["low"] <= c["good"]["value"] <= c["good"]["high"]
    assert "good beat noisy" in c["sentence"] and f"{c['good']['value']:.3f}" in c["sentence"]
    same = compare.paired(labels, good, good, videos, 4, names=("a", "b"))
    assert same["gain"]["verdict"] == "within the noise" and "did not beat" in same["sentence"]


def test_a_mask_narrows_the_comparison_to_some_frames():
    labels, videos, rng = _frames()
    hidden = rng.random(len(labels)) < 0.3
    a = labels.copy()                                   # right everywhere
    b = np.where(hidden, (labels + 1) % 4, labels)      # wrong exactly on the hidden frames
    everywhere = compare.paired(labels, a, b, videos, 4, score="accuracy")
    on_hidden = compare.paired(labels, a, b, videos, 4, score="accuracy", mask=hidden)
    assert on_hidden["frames"] == hidden.sum() and on_hidden["b"]["value"] == 0.0
    assert on_hidden["gain"]["gain"] == 1.0 > everywhere["gain"]["gain"]
    with pytest.raises(ValueError, match="same frames"):
        compare.paired(labels, a[:-1], b, videos, 4)


def test_comparisons_are_saved_and_the_study_reads_their_spread(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_KIT_OUTPUT", str(tmp_path))
    record = lambda va, vb, verdict: {"names": ["idea", "base"], "score": "p_expr", "idea": {"value": va},  # noqa: E731
                                      "base": {"value": vb}, "gain": {"verdict": verdict}}
    compare.save(record(0.5, 0.4, "better"), "idea_vs_base")
    assert compare.load_all()["idea_vs_base"]["idea"]["value"] == 0.5
    wins = study.summarise({0: {"c": record(0.50, 0.40, "better")}, 1: {"c": record(0.52, 0.41, "better")},
                            2: {"c": record(0.49, 0.40, "within the noise")}})
    assert bool(wins.loc["c", "wins beyond seed spread"]) and wins.loc["c", "seeds beyond own interval"] == 2
    assert wins.loc["c", "gain mean"] == pytest.approx(0.1, abs=1e-9)
    mixed = study.summarise({0: {"c": record(0.50, 0.40, "better")}, 1: {"c": record(0.40, 0.45, "worse")},
                             2: {"c": record(0.45, 0.44, "within the noise")}})
    assert not bool(mixed.loc["c", "wins beyond seed spread"])
    # a saved study reads back with the sentence its numbers write, and its absence is no error
    assert study.saved("04_train_dan") is None
    path = tmp_path / "runs" / "study" / "04_train_dan.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"parameters": {"compare": True}, "summary": json.loads(wins.to_json(orient="index"))}))
    back = study.saved("04")
    assert back.attrs["parameters"] == {"compare": True}
    assert study.verdict(back).startswith("c: idea 0.503 (sd 0.015) vs base 0.403") and "idea wins beyond" in study.verdict(back)
    assert "does not win" in study.verdict(mixed)
    # a study at other parameters is kept apart: it never replaces the one the notebook shows
    other = study.study_path("04", {"epochs": 8, "segment_frames": "16,40"})
    assert other.name == "04_train_dan--epochs-8_segment_frames-16+40.json" and other.parent == path.parent
    # a float parameter given as 2 or as 2.0 is one run, so one study
    assert study.study_path("04", {"minutes": 2.0}) == study.study_path("04", {"minutes": 2})
    assert study.study_path("04", {"minutes": 2.5}).name == "04_train_dan--minutes-2.5.json"
    other.write_text(json.dumps({"parameters": {"epochs": 8}, "summary": json.loads(mixed.to_json(orient="index"))}))
    assert study.saved("04").attrs["parameters"] == {"compare": True}


def test_tidy_keeps_one_finished_progress_bar(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fit()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\repoch 1:   0%| 0/9"),
                    nbformat.v4.new_output("stream", name="stderr", text="\repoch 1:  50%| 4/9"),
                    nbformat.v4.new_output("stream", name="stderr", text="\repoch 1: 100%| 9/9\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="epoch 1: loss 2.0\n")]
    nb.cells.append(cell)
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    tidy(path)
    outs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [o.text for o in outs] == ["epoch 1: 100%| 9/9\n", "epoch 1: loss 2.0\n"]


def test_notebooks_are_found_by_number_and_a_wrong_name_is_explained():
    assert notebook_path("04").name == "04_train_dan.ipynb"
    with pytest.raises(FileNotFoundError, match="names 0 notebooks"):
        notebook_path("99_nothing")


def test_committed_notebooks_hold_no_half_drawn_progress_bars():
    """Outputs are refreshed with `python -m fer_kit.run_notebook`, which tidies them."""
    for path in sorted(notebook_path("00").parent.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        streams = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "stream"]
        assert not any("\r" in o.text for o in streams), path.name


def test_committed_notebooks_show_their_figures():
    """A notebook executed with MPLBACKEND=agg in its environment saves no figure at all (seen: 03, 05 and
    09 once); `run_notebook` gives the kernel the inline backend, and every committed notebook that calls
    `plt.show()` or draws through `fer_kit.plots` keeps at least one picture."""
    for path in sorted(notebook_path("00").parent.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        pictures = sum("image/png" in o.get("data", {}) for o in outputs)
        assert pictures >= 1, f"{path.name}: no figure in its saved outputs; re-run python -m fer_kit.run_notebook"


def test_run_notebook_gives_the_kernel_the_inline_backend(tmp_path, monkeypatch):
    import papermill

    from fer_kit import run_notebook

    seen = {}
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda src, dst, **kw: (seen.update(backend=os.environ["MPLBACKEND"]),
                                                shutil.copy(src, dst)))
    run_notebook.execute("02", tmp_path / "02.ipynb")
    assert seen["backend"] == "module://matplotlib_inline.backend_inline"
    assert os.environ["MPLBACKEND"] == "agg"            # restored afterwards


def test_a_default_run_writes_its_own_time_into_the_objectives(tmp_path):
    from fer_kit import run_notebook

    path = tmp_path / "01.ipynb"
    shutil.copy(notebook_path("01"), path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["papermill"]["duration"] = 201.0
    nbformat.write(nb, path)
    assert run_notebook.record_time(path) == pytest.approx(3.35)
    objectives = nbformat.read(path, as_version=4).cells[1].source
    assert "its default run took 3.4 min" in objectives and objectives.count(" took ") == 1


def test_a_refreshed_study_writes_seed_0_s_time_into_the_objectives(tmp_path, monkeypatch):
    """--refresh makes seed 0 the committed default run: its objectives must then state that run's time."""
    monkeypatch.setenv("FER_KIT_OUTPUT", str(tmp_path))
    path = tmp_path / "01.ipynb"

    def execute(notebook, output=None, parameters=None, env=None):
        shutil.copy(notebook_path("01"), path)
        nb = nbformat.read(path, as_version=4)
        nb.metadata["papermill"]["duration"] = 201.0
        nbformat.write(nb, path)
        return path, 201.0
    monkeypatch.setattr(study, "execute", execute)
    study.run_seeds("01", [0], refresh=True)
    assert "its default run took 3.4 min" in nbformat.read(path, as_version=4).cells[1].source


def test_committed_notebooks_name_no_path_of_this_machine():
    from fer_kit.paths import project_dir

    for path in sorted(notebook_path("00").parent.glob("*.ipynb")):
        assert str(project_dir().parent) not in path.read_text(), path.name


def test_unpaired_sentence_reads_overlap_of_the_intervals():
    a = {"lsd_mean_f1": 0.20, "interval": (0.15, 0.25)}
    assert "a difference of -0.100; the intervals do not overlap: dim is lower beyond the noise" in compare.unpaired_sentence(
        "dim", a, "photo", {"lsd_mean_f1": 0.30, "interval": (0.26, 0.35)}, "lsd_mean_f1")
    assert compare.unpaired_sentence("dim", a, "photo", {"lsd_mean_f1": 0.24, "interval": (0.19, 0.30)},
                                     "lsd_mean_f1").endswith("the intervals overlap: this run cannot tell the two apart")
    assert compare.unpaired_sentence("dim", a, "photo", {"lsd_mean_f1": 0.10, "interval": (0.05, 0.15)},
                                     "lsd_mean_f1").endswith("the intervals overlap: this run cannot tell the two apart")


def test_drop_under_names_the_model_the_condition_hurts():
    rng = np.random.default_rng(0)
    videos = np.repeat([f"v{k}" for k in range(12)], 40)
    labels = rng.integers(0, 4, len(videos))
    covered = np.tile(np.arange(40) < 10, 12)
    covered[videos == "v11"] = False                          # a video without covered frames does not count,
    covered[videos == "v10"] = True                           # nor one without clean frames
    fragile = np.where(covered, (labels + 1) % 4, labels)     # right on clean frames, wrong on covered ones
    robust = labels.copy()
    out = compare.drop_under(labels, {"fragile": fragile, "robust": robust}, videos, covered, 4,
                             score="accuracy", what="covered", n_boot=200)
    assert out["videos"] == 10 and out["frames"] == 10 * 40
    assert out["drop"] == {"fragile": pytest.approx(1.0), "robust": pytest.approx(0.0)}
    assert out["gap"]["verdict"] == "better" and "fragile loses more than robust" in out["sentence"]
    swapped = compare.drop_under(labels, {"robust": robust, "fragile": fragile}, videos, covered, 4, score="accuracy")
    assert swapped["gap"]["verdict"] == "worse" and "robust loses less" in swapped["sentence"]
    same = compare.drop_under(labels, {"a": robust, "b": robust}, videos, covered, 4, score="accuracy")
    assert same["gap"]["verdict"] == "within the noise"
