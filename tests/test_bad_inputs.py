"""The bad-input catalogue: every way a user's files, parameters or machine can be wrong, with the exact
outcome the kit promises. Each outcome is one of three kinds:

  error   a clear exception whose message names the file, line or value (matched below) and what to do;
  drop    the input is left out, counted under a named reason in the table's report;
  ok      read as the user meant, checked by `check` (never silently changed).

Never a traceback from deep inside torch or PIL, never a silent change. Each case builds its input in
tmp_path in milliseconds; `run(tmp_path)` returns what the case produced (a table, a tensor, ...).
"""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fer_kit import train
from fer_kit.train import run_folder
from fer_kit.config import TrainConfig
from fer_kit.losses import CrossEntropy
from fer_kit.data import synthetic
from fer_kit.data.abaw import read_mtl, read_task
from fer_kit.data.dataset import load_image
from fer_kit.data.folders import read_class_folders
from fer_kit.data.lsd import read_lsd
from fer_kit.labels import AU_NAMES, EXPR_CLASSES
from fer_kit.models.baseline import ClassifierOutput
from helpers import fail_saves_halfway

TASK_DIR = {"EXPR": "EXPR_Classification_Challenge", "AU": "AU_Detection_Challenge", "VA": "VA_Estimation_Challenge"}
HEADER = {"EXPR": ",".join(EXPR_CLASSES), "AU": ",".join(AU_NAMES), "VA": "valence,arousal"}
AU_OK = ",".join(["0"] * 12)


# ------------------------------------------------------------------------------------------ builders

def face(path, mode="RGB", size=(16, 16), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value, np.uint16)).save(path)
    else:
        Image.new(mode, size, value if mode in ("L",) else (value,) * len(mode)).save(path)
    return path


def video(root, lines, task="EXPR", frames=None, name="v", split="Train_Set"):
    """An ABAW per-task file for one video, and `frames` images (default: one per annotation line)."""
    d = root / "annotations" / TASK_DIR[task] / split
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.txt").write_text("\n".join([HEADER[task], *lines]) + "\n")
    for k in range(1, (len(lines) if frames is None else frames) + 1):
        face(root / "cropped_aligned" / name / f"{k:05d}.jpg")
    return root


def mtl(root, rows):
    d = root / "annotations" / "MTL_Challenge"
    d.mkdir(parents=True, exist_ok=True)
    (d / "training_set_annotations.txt").write_text("\n".join(["image,valence,arousal,expression," + ",".join(AU_NAMES),
                                                               *rows]) + "\n")
    face(root / "cropped_aligned" / "v" / "00001.jpg")
    return root


def expr_table(lines, frames=None):
    return lambda t: read_task(video(t, lines, frames=frames), "EXPR")


def task_table(task, lines):
    return lambda t: read_task(video(t, lines, task), task)


def image(mode="RGB", size=(16, 16), value=100):
    return lambda t: load_image(face(t / f"face_{mode.replace(';', '')}.png", mode, size, value), 32)


def raw_file(name, data: bytes, load):
    def run(t):
        (t / name).write_bytes(data)
        return load(t / name)
    return run


def truncated_jpeg(t):
    full = face(t / "full.jpg", size=(64, 64)).read_bytes()
    (t / "cut.jpg").write_bytes(full[: len(full) // 2])
    return load_image(t / "cut.jpg", 32)


def params(**given):
    return lambda t: TrainConfig.from_params(given)


def tiny_cfg(t, **kw):
    return TrainConfig(**{"n_frames": 600, "image_size": 32, "batch_size": 4, "epochs": 1, "progress": False,
                          "out_dir": str(t / "run"), **kw})


def checkpoint_of(state):
    def run(t):
        torch.save(state, t / "ck.pt")
        model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(10)], nn.Linear(4, 8))   # 22 tensors, 8 classes
        return train.init_weights(model, t / "ck.pt", model_name="resnet_classifier")
    return run


def other_model_checkpoint(t):
    torch.save({"model": {"trunk.stem.weight": torch.ones(3)}, "config": {"model": "ddamfn"}}, t / "ck.pt")
    return train.init_weights(nn.Linear(4, 8), t / "ck.pt", model_name="resnet_classifier")


def seven_class_checkpoint(t):
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(10)], nn.Linear(4, 7))
    torch.save({"model": model.state_dict(), "config": {"model": "resnet_classifier"}}, t / "ck.pt")
    return checkpoint_of(torch.load(t / "ck.pt"))(t)


def unknown_folder(reader):
    def run(t):
        for folder in ("HAPPINESS", "Sadnes"):
            face(t / "training_set_synthetic_images" / folder / "0.jpg")
        with pytest.warns(UserWarning) if reader is read_class_folders else _no_warning():
            return reader(t / "training_set_synthetic_images")
    return run


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def empty_class_folder(t):
    face(t / "happy" / "0.jpg")
    (t / "sad").mkdir()
    return read_class_folders(t)


def empty_split(t):
    video(t, ["0", "1"], name="a")
    video(t, ["-1", "-1"], name="b", split="Validation_Set")
    return train.split_tables(tiny_cfg(t, data_root=str(t)))


def lsd_layout_as_abaw(t):
    face(t / "training_set_synthetic_images" / "ANGER" / "0.jpg")
    return train.split_tables(tiny_cfg(t, data_root=str(t)))


def run_with(make_folder, **cfg):
    """fit() on a prepared run folder: every case here stops before any data is read."""
    def run(t):
        make_folder(t / "run")
        return train.fit(tiny_cfg(t, **cfg))
    return run


def holds_a_run(folder, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config} if config else {"epoch": 1}, folder / "last.pt")


def locked_by_live_process(folder):
    folder.mkdir(parents=True)
    (folder / ".lock").write_text(str(os.getppid()))        # pytest's parent: alive


def read_only_output(t, monkeypatch):
    (t / "ro").mkdir()
    (t / "ro").chmod(0o500)
    if os.geteuid() == 0:       # root writes into read-only folders (as in CI's containers): the OS refusal is played
        real = type(t).mkdir

        def refuse(self, *a, **k):
            if self.is_relative_to(t / "ro"):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *a, **k)
        monkeypatch.setattr(type(t), "mkdir", refuse)
    return train.fit(tiny_cfg(t, out_dir=str(t / "ro" / "run")))


def disk_full_on_save(t, monkeypatch):
    path = t / "ck.pt"
    train.save_checkpoint({"w": torch.ones(2)}, path)
    fail_saves_halfway(monkeypatch)
    try:
        train.save_checkpoint({"w": torch.zeros(2)}, path)
    finally:
        monkeypatch.undo()
        assert sorted(p.name for p in t.iterdir()) == ["ck.pt"]                  # no temporary left
        assert torch.equal(train.load_checkpoint(path)["w"], torch.ones(2))      # the previous one survives


def failed_metrics_write(t, monkeypatch):
    path = t / "metrics.json"
    run_folder.write_json({"score": 1.0}, path)
    real = type(path).write_text

    def half_then_fail(self, text, *a, **k):
        real(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(type(path), "write_text", half_then_fail)
    try:
        run_folder.write_json({"score": 2.0}, path)
    finally:
        monkeypatch.undo()
        assert sorted(p.name for p in t.iterdir()) == ["metrics.json"]
        assert json.loads(path.read_text()) == {"score": 1.0}


def nan_metrics(t):
    run_folder.write_json({"score": float("nan"), "f1": [float("inf"), 0.5]}, t / "m.json")
    return json.loads((t / "m.json").read_text())   # the strict parser: a bare NaN would fail here


class Toy(nn.Module):
    """A classifier whose loss is finite but whose gradient is NaN (sqrt at 0), or whose logits are NaN."""

    def __init__(self, nan_logits=False):
        super().__init__()
        self.w, self.p, self.nan_logits = nn.Parameter(torch.ones(8)), nn.Parameter(torch.zeros(1)), nan_logits

    def forward(self, x):
        logits = (self.w + torch.sqrt(self.p - self.p)).expand(len(x), 8)
        return ClassifierOutput(logits * float("nan") if self.nan_logits else logits, logits)


def one_epoch_of(model):
    def run(t):
        cfg = tiny_cfg(t, model="resnet_classifier", clip_grad=0.0)
        batches = [(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))]
        return train.train_one_epoch(model, CrossEntropy(), batches, torch.optim.SGD(model.parameters(), 0.1),
                                     torch.device("cpu"), cfg, 1)
    return run


def imwrite_fails(t, monkeypatch):
    monkeypatch.setattr(synthetic.cv2, "imwrite", lambda *a, **k: False)
    try:
        synthetic.ensure_synthetic(synthetic.SyntheticConfig(n_frames=200, image_size=32), cache_dir=t,
                                   progress=False, workers=1)
    finally:
        assert not list((t / "synthetic").iterdir())          # nothing marked complete, no half folder


def pickled_callable(t):
    torch.save({"model": {}, "hook": os.getcwd}, t / "evil.pt")
    return train.load_checkpoint(t / "evil.pt")


# ------------------------------------------------------------------------------------------- the table

@dataclass
class Case:
    name: str
    run: Callable                   # run(tmp_path) or run(tmp_path, monkeypatch)
    error: type | None = None       # the exception expected ...
    match: str = ""                 # ... and a regex its message must contain (the file/line/value, what to do)
    drops: dict | None = None       # or: the table's counted drops
    check: Callable[[Any], bool] | None = None   # or: what was read, as the user meant it


CASES = [
    # images
    Case("zero-byte JPEG", raw_file("empty.jpg", b"", lambda p: load_image(p, 32)), ValueError,
         r"cannot decode image .*empty\.jpg"),
    Case("truncated JPEG", truncated_jpeg, ValueError, r"(?i)cannot decode image .*cut\.jpg: truncated"),
    Case("grayscale image", image("L"), check=lambda x: x.shape == (3, 32, 32) and (x == 100).all()),
    Case("RGBA image", image("RGBA"), check=lambda x: x.shape == (3, 32, 32) and (x == 100).all()),
    Case("16-bit grayscale PNG", image("I;16", value=32896), check=lambda x: (x == 128).all()),   # scaled, not clipped
    Case("1x1 image", image(size=(1, 1)), ValueError, r"face_RGB\.png is 1x1 px, too small .*remove it"),
    # ABAW per-task files
    Case("missing frame", expr_table(["0", "1", "2"], frames=2), drops={"without an image": 1}),
    Case("annotation longer than its video", expr_table(["0", "1", "2", "3"], frames=2), drops={"without an image": 2}),
    Case("annotation shorter than its video", expr_table(["0", "1"], frames=4),
         check=lambda t: len(t) == 2 and not t.report.dropped),      # frames 3-4 have no label: not read
    Case("EXPR -1 first, middle, last", expr_table(["-1", "0", "-1", "1", "-1"]), drops={"labelled -1": 3}),
    Case("AU -1 in each of the 12 positions",
         task_table("AU", [",".join("-1" if i == k else "1" for i in range(12)) for k in range(12)] + [AU_OK]),
         drops={"AU labelled -1": 12}),
    Case("VA -5 as valence, as arousal, as both", task_table("VA", ["-5,0.1", "0.1,-5", "-5,-5", "0.1,0.2"]),
         drops={"VA labelled -5": 3}),
    Case("EXPR label 2.7", expr_table(["0", "2.7"]), ValueError, r"v\.txt, line 3: expected an integer label .*'2\.7'"),
    Case("EXPR label NaN", expr_table(["nan"]), ValueError, r"v\.txt, line 2: expected an integer label .*'nan'"),
    Case("text in an EXPR line", expr_table(["happy"]), ValueError, r"line 2: expected an integer label .*'happy'"),
    Case("NaN valence", task_table("VA", ["nan,0.1"]), ValueError, r"v\.txt, line 2: valence/arousal must be in \[-1, 1\]"),
    Case("AU value 0.5", task_table("AU", [",".join(["0.5"] + ["0"] * 11)]), ValueError, r"line 2: AU values must be 0, 1 or -1"),
    # MTL csv
    Case("MTL csv with 15 columns", lambda t: read_mtl(mtl(t, [f"v/00001.jpg,0.1,0.1,{AU_OK}"])), ValueError,
         r"training_set_annotations\.txt, line 2: expected 16 fields .*got 15"),
    Case("MTL csv with 17 columns", lambda t: read_mtl(mtl(t, [f"v/00001.jpg,0.1,0.1,1,{AU_OK},0"])), ValueError,
         r"line 2: expected 16 fields .*got 17"),
    Case("image path escaping the data root", lambda t: read_mtl(mtl(t, [f"../../etc/passwd,0.1,0.1,1,{AU_OK}"])),
         ValueError, r"line 2: image path '\.\./\.\./etc/passwd' leads outside .*cropped_aligned"),
    # splits, classes, layouts
    Case("empty class folder", empty_class_folder,
         check=lambda tab: tab.class_counts()[EXPR_CLASSES.index("Sadness")] == 0 and len(tab) == 1),
    Case("empty validation split", empty_split, ValueError, r"EXPR Validation_Set.*no usable frames left"),
    Case("data_root holding another dataset's layout (LSD as ABAW)", lsd_layout_as_abaw, FileNotFoundError,
         r"EXPR_Classification_Challenge"),
    Case("unknown class folder, folder reader", unknown_folder(read_class_folders),
         drops={"in unknown folder Sadnes": 1}),
    Case("unknown class folder, LSD reader", unknown_folder(read_lsd), drops={"in unknown folder Sadnes": 1}),
    # parameters
    Case("misspelt notebook parameter", params(epoch=8), ValueError, r"unknown parameter 'epoch' \(did you mean 'epochs'\?\)"),
    Case("mistyped notebook parameter", params(epochs="8"), TypeError, r"parameter epochs must be int; got '8'"),
    Case("unknown exist value", params(exist="append"), ValueError, r"unknown exist 'append'.*error, resume, overwrite"),
    # checkpoints
    Case("checkpoint of another model", other_model_checkpoint, ValueError,
         r"ck\.pt is a checkpoint of 'ddamfn'; it matches only 0 of the 2 tensors of this 'resnet_classifier'"),
    Case("checkpoint with another class count", seven_class_checkpoint,
         check=lambda c: c["loaded"] == 20 and c["reinitialised"] == {
             "10.weight": "10.weight (8, 4) here, (7, 4) in the checkpoint", "10.bias": "10.bias (8,) here, (7,) in the checkpoint"}),
    Case("checkpoint that pickles a callable", pickled_callable, ValueError, r"evil\.pt: refused to load: it pickles"),
    Case("zero-byte checkpoint", raw_file("last.pt", b"", train.load_checkpoint), ValueError,
         r"last\.pt is not a readable checkpoint"),
    # run folders
    Case("existing run folder, CLI default exist=error", run_with(holds_a_run, exist="error"), FileExistsError,
         r"run already holds a run \(last\.pt\); continue it with --exist resume, replace it with --exist overwrite"),
    Case("resume with another learning rate", run_with(lambda f: holds_a_run(f, tiny_cfg(f.parent, lr=1e-3).to_dict()),
                                                        exist="resume", lr=1e-2, epochs=5), ValueError,
         r"cannot resume .*last\.pt with another configuration: head_lr: 0\.001 -> 0\.01; lr: 0\.001 -> 0\.01\. "
         r"Resume with its settings \(only epochs, .*\), or start a new run with exist=overwrite"),
    Case("resume from a last.pt without config", run_with(holds_a_run, exist="resume"), ValueError, r"last\.pt holds no config"),
    Case("run folder locked by a live run", run_with(locked_by_live_process), RuntimeError,
         r"run is in use by another training run \(process \d+"),
    Case("read-only output folder", read_only_output, PermissionError, r"cannot create the run folder .*run.*choose another out_dir"),
    Case("full disk during a checkpoint write", disk_full_on_save, OSError,
         r"could not write the checkpoint .*ck\.pt \(No space left on device\); the previous ck\.pt, if any, is unchanged"),
    Case("failed metrics.json write", failed_metrics_write, OSError, r"No space left on device"),
    Case("NaN and inf in metrics.json", nan_metrics, check=lambda m: m == {"score": None, "f1": [None, 0.5]}),
    Case("cv2.imwrite returns False", imwrite_fails, OSError, r"could not write .*00001\.jpg.*will be rebuilt"),
    # training numerics
    Case("non-finite gradients, finite loss", one_epoch_of(Toy()), FloatingPointError,
         r"gradients became nan at epoch 1, step 0 \(the loss 2\.079 was finite\); try a lower lr"),
    Case("NaN loss", one_epoch_of(Toy(nan_logits=True)), FloatingPointError, r"loss became nan at epoch 1, step 0; try a lower lr"),
]


def test_the_catalogue_is_complete():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)
    assert all((c.error is not None) + (c.drops is not None) + (c.check is not None) == 1 for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    args = (tmp_path, monkeypatch) if case.run.__code__.co_argcount == 2 else (tmp_path,)
    if case.error is not None:
        with pytest.raises(case.error, match=case.match):
            case.run(*args)
        return
    out = case.run(*args)
    if case.drops is not None:
        assert out.report.dropped == case.drops, out.report
    else:
        assert case.check(out), out
