"""Every dataset kind trains: a small fixture in each dataset's own on-disk format, one epoch through the
CLI (`--dataset <kind> --data_root <folder>`), and notebook 04 pointed at one by its parameters."""
import json

import numpy as np
import papermill as pm
import pytest

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.data.splits import KINDS, SEVEN_CLASSES, carve, read_splits
from fer_kit.data.table import DropReport, FrameTable
from fer_kit.labels import EXPR_CLASSES
from fer_kit.paths import project_dir
from test_readers_datasets import AFFECTNET_HEADER, affectnet_row, pixels, write_image

PER_CLASS = 4          # images per class and split: enough for a carved split to hold whole classes


def shade(i):
    return 40 + (i * 37) % 180


def make_rafdb(root):
    lines = []
    for split, n in (("train", PER_CLASS * 2), ("test", PER_CLASS)):
        for code in range(1, 8):                                   # 1 Surprise ... 7 Neutral
            for i in range(n):
                name = f"{split}_{code}{i:04d}"
                write_image(root / "basic" / "Image" / "aligned" / f"{name}_aligned.jpg", shade(code * 10 + i), (16, 16))
                lines.append(f"{name}.jpg {code}")
    (root / "basic" / "EmoLabel").mkdir(parents=True)
    (root / "basic" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")


def make_affectnet(root):
    for csv_name, n in (("training.csv", PER_CLASS * 2), ("validation.csv", PER_CLASS)):
        rows = []
        for code in range(8):                                      # 0 Neutral ... 7 Contempt
            for i in range(n):
                name = f"{csv_name[0]}{code}/{i}.jpg"
                write_image(root / "Manually_Annotated_Images" / name, shade(code * 10 + i), (20, 20))
                rows.append(affectnet_row(name, code, box=(2, 2, 16, 16)))
        lists = root / "Manually_Annotated_file_lists"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / csv_name).write_text("\n".join([AFFECTNET_HEADER] + rows) + "\n")


def make_fer2013(root):
    rows = ["emotion,pixels,Usage"]
    for usage, n in (("Training", PER_CLASS * 2), ("PublicTest", PER_CLASS), ("PrivateTest", PER_CLASS)):
        rows += [f'{code},"{pixels(code * 100 + i)}",{usage}' for code in range(7) for i in range(n)]
    root.mkdir(parents=True)
    (root / "fer2013.csv").write_text("\n".join(rows) + "\n")


FER_FOLDERS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def make_fer2013_folders(root):
    for split, n in (("train", PER_CLASS * 2), ("test", PER_CLASS)):
        for c, name in enumerate(FER_FOLDERS):
            for i in range(n):
                write_image(root / split / name / f"{i}.png", shade(c * 10 + i), (16, 16))


def make_expw(root):
    lines = []
    for code in range(7):                                          # 0 angry ... 6 neutral
        for i in range(PER_CLASS * 3):
            name = f"{code}_{i}.jpg"
            write_image(root / "image" / "origin" / name, shade(code * 10 + i), (30, 30))
            lines.append(f"{name} 0 2 3 25 24 50.0 {code}")        # top left right bottom confidence expression
    (root / "label").mkdir(parents=True)
    (root / "label" / "label.lst").write_text("\n".join(lines) + "\n")


def make_folders(root):
    for c, name in enumerate(EXPR_CLASSES):                        # all 8, with Other: no split folders
        for i in range(PER_CLASS * 3):
            write_image(root / name / f"{i}.jpg", shade(c * 10 + i), (16, 16))


MAKERS = {"rafdb": make_rafdb, "affectnet": make_affectnet, "fer2013": make_fer2013,
          "fer2013_folders": make_fer2013_folders, "expw": make_expw, "folders": make_folders}


def test_every_kind_has_a_fixture_here():
    assert set(MAKERS) == set(KINDS) - {"abaw", "lsd"}      # abaw: the synthetic faces; lsd: tests/test_lsd_shift.py


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_one_epoch_through_the_cli_and_notebook_04_s_parameters(kind, tmp_path):
    """The CLI, and notebook 04's path (its parameters through `params.config(DanConfig).train_config()`
    into `train.fit`, as its cells do; the whole notebook runs on RAF-DB below) train the same run."""
    from fer_kit.config import DanConfig, NotebookParams

    root = tmp_path / kind
    MAKERS[kind](root)
    values = dict(dataset=kind, data_root=str(root), model="test_dan", epochs=1, image_size=32, batch_size=8,
                  progress=False)
    argv = [a for k, v in {**values, "out_dir": str(tmp_path / "run")}.items() for a in (f"--{k}", str(v))]
    result = train.main(argv)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["dataset"] == kind and m["config"]["num_classes"] == (7 if kind in SEVEN_CLASSES else 8)
    assert len(m["best"]["per_class_f1"]) == m["config"]["num_classes"] and kind in m["data"]["source"]
    assert m["test"] is not None and m["data"]["test_frames"] > 0 and m["data"]["val_frames"] > 0
    assert result.best["epoch"] == 1
    namespace = {}
    params = NotebookParams(namespace)
    namespace.update(values, out_dir=str(tmp_path / "nb"), n_frames=m["config"]["n_frames"])   # papermill's cell
    notebook = train.fit(params.config(DanConfig).train_config())
    assert notebook.best == result.best and notebook.history["train_loss"].tolist() == result.history["train_loss"].tolist()


def test_carved_splits_take_whole_groups_and_every_class(tmp_path):
    n = 70
    table = FrameTable(paths=[tmp_path / f"{i}.jpg" for i in range(n)], labels=np.arange(n) % 7,
                       videos=np.array([f"v{i // 2}" for i in range(n)]), classes=EXPR_CLASSES[:7],
                       report=DropReport(source="toy", lines=n, kept=n))
    rest, carved = carve(table, 0.2, seed=1, name="validation")
    assert len(rest) + len(carved) == n and not set(rest.videos) & set(carved.videos)
    assert set(carved.labels) == set(range(7)) and 0.1 < len(carved) / n < 0.3
    assert "validation split carved from toy" in carved.report.source and carved.report.dropped == {}
    again = carve(table, 0.2, seed=1, name="validation")[1]
    assert list(again.videos) == list(carved.videos)                                   # seeded


def test_a_dataset_needs_its_folder_and_fitting_settings(tmp_path):
    with pytest.raises(ValueError, match="dataset='rafdb' reads data_root, which is None"):
        TrainConfig(dataset="rafdb")
    with pytest.raises(ValueError, match=r"unknown dataset 'raf_db' \(did you mean 'rafdb'\?\)"):
        TrainConfig(dataset="raf_db", data_root=str(tmp_path))
    with pytest.raises(ValueError, match="task must be 'expr'"):
        TrainConfig(dataset="rafdb", data_root=str(tmp_path), model="ddamfn", task="mtl")
    with pytest.raises(ValueError, match="dataset 'lsd'"):
        TrainConfig(dataset="lsd", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_splits("rafdb", tmp_path / "nowhere", 7)
    for name in EXPR_CLASSES[:7]:                                  # class folders without Other
        write_image(tmp_path / "g" / name / "0.jpg")
    with pytest.raises(ValueError, match="no training frames labelled Other .*num_classes=7"):
        read_splits("folders", tmp_path / "g", 8)


@pytest.mark.notebooks
def test_notebook_04_trains_on_rafdb_by_its_parameters(tmp_path):
    make_rafdb(tmp_path / "raf")
    pm.execute_notebook(project_dir() / "notebooks" / "04_train_dan.ipynb", tmp_path / "out.ipynb",
                        parameters=dict(dataset="rafdb", data_root=str(tmp_path / "raf"), model="test_dan", epochs=1,
                                        image_size=32, batch_size=8, out_dir=str(tmp_path / "run"),
                                        figures_dir=str(tmp_path / "figures")),
                        kernel_name="python3", progress_bar=False, cwd=str(project_dir() / "notebooks"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["dataset"] == "rafdb" and m["config"]["num_classes"] == 7
    assert m["data"]["train_frames"] + m["data"]["val_frames"] == 7 * PER_CLASS * 2 and m["data"]["test_frames"] == 7 * PER_CLASS


def test_paper_a_study_pretrains_on_synthetic_faces_whatever_the_dataset(tmp_path):
    """Notebook 09's "DAN TL" is transfer from another dataset (paper A: AffectNet): on a real dataset the
    pretraining run reads the synthetic faces, with the study's classes so the classifier carries over."""
    from fer_kit import ensemble
    from fer_kit.config import EnsembleStudyConfig

    cfg = EnsembleStudyConfig(dataset="rafdb", data_root=str(tmp_path))
    pre = ensemble.pretrain_config(cfg)
    assert (pre.dataset, pre.data_root, pre.num_classes, pre.style) == ("abaw", None, 7, cfg.pretrain_style)
    assert pre.out_dir.startswith(cfg.out_dir) and pre.init_from is None


@pytest.mark.notebooks
def test_notebook_06_trains_on_rafdb_and_compares_on_all_frames(tmp_path):
    """Only the synthetic faces record which region an occluder covers: on a real dataset notebook 06
    compares SCAN+CCI with its baseline on all test frames instead of failing on an empty split."""
    from fer_kit.data.examples import write_example

    root = write_example("rafdb", tmp_path / "raf", per_class=2, size=32)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(project_dir() / "notebooks" / "06_train_scan_cci.ipynb", out,
                        parameters=dict(dataset="rafdb", data_root=str(root), epochs=1, image_size=48, batch_size=8,
                                        max_batches=2, out_dir=str(tmp_path / "run"), figures_dir=str(tmp_path / "fig")),
                        kernel_name="python3", progress_bar=False, cwd=str(project_dir() / "notebooks"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["dataset"] == "rafdb" and list(m["occlusion"]) == ["all"]
    assert m["occlusion"]["all"]["frames"] == 7 * 2 and "comparison is on all frames" in out.read_text()


@pytest.mark.notebooks
def test_notebook_10_explains_a_model_trained_on_rafdb_and_scores_nothing_without_landmarks(tmp_path):
    """RAF-DB has no landmarks, so no AU regions: notebook 10 draws the maps of a DAN trained on it and
    leaves the pointing game out; DDAMFN (multi-task: VA and AU labels) is left out, saying why."""
    from fer_kit.data.examples import write_example

    root = write_example("rafdb", tmp_path / "raf", per_class=2, size=32)
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(project_dir() / "notebooks" / "10_gradcam_attention.ipynb", out,
                        parameters=dict(dataset="rafdb", data_root=str(root), models="dan,ddamfn", methods="gradcam",
                                        run_dir=str(tmp_path / "no_run"), n_faces=7, epochs=1, max_batches=2,
                                        interactive=False, out_dir=str(tmp_path / "run"),
                                        figures_dir=str(tmp_path / "fig")),
                        kernel_name="python3", progress_bar=False, cwd=str(project_dir() / "notebooks"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary) == ["dan"] and summary["dan"]["dataset"] == "rafdb" and not summary["dan"]["scored"]
    assert "rafdb at" in summary["dan"]["how"] and summary["dan"]["how"].startswith("trained here")
    text = out.read_text()
    assert "ddamfn: left out (multi-task" in text and "has no landmarks" in text and "no pointing scores" in text
    for fig in ("10_gradcam_grid", "10_dan_heads", "10_failures", "10_explorer"):
        assert (tmp_path / "fig" / f"{fig}.png").stat().st_size > 1000, fig
    assert not (tmp_path / "fig" / "10_pointing_methods.png").exists()


def test_explain_config_names_what_cannot_train_on_a_dataset(tmp_path):
    from fer_kit.explain import ExplainConfig

    cfg = ExplainConfig(dataset="rafdb", data_root=str(tmp_path))
    assert cfg.families == ["dan", "regnet_transformer", "scan_cci"]
    assert set(cfg.skipped) == {"ddamfn", "dan_landmarks"}
    assert (cfg.fallback("scan_cci").dataset, cfg.fallback("scan_cci").num_classes) == ("rafdb", 7)
    assert ExplainConfig(dataset="lsd", data_root=str(tmp_path)).families == ["dan_landmarks"]
    with pytest.raises(ValueError, match="none of models='ddamfn' trains on dataset='rafdb'"):
        ExplainConfig(dataset="rafdb", data_root=str(tmp_path), models="ddamfn")
    with pytest.raises(ValueError, match="reads data_root"):
        ExplainConfig(dataset="rafdb")
