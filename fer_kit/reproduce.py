"""Notebook 11's logic: every results table of papers A-E with the kit's measured column beside it.

Each row of papers/reported_results.csv (paper, table, method) has a *recipe*: the run folder of notebooks
04-09 whose metrics fill it, the small run notebook 11 trains itself when that folder is absent (always
under runs/11_*, so it never overwrites a notebook's run), or the reason the kit cannot run it at all
(a test-set leaderboard, another team's method, data or weights that are not here). Pointed at real
data (`data_root`) with the paper presets, the same recipes are the reproduction.

The papers measured on the real Aff-Wild2 validation set with pretrained networks and GPU schedules; the
kit, by default, on synthetic faces with small networks trained from scratch on a laptop. So the columns
are read for their *patterns* (does the ensemble beat one model? do tuned AU thresholds raise the AU F1?)
and not for their levels; `patterns` puts each paper's comparisons side by side.
"""
from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import metrics, papers
from .config import FromParams, comma_list
from .names import check_names
from .paths import output_dir

PAPERS = ("A", "B", "C", "D", "E")
# preset -> the TrainConfig preset of each paper's runs
PRESETS = {"laptop": {"A": "laptop", "B": "laptop_b", "C": "laptop_c", "D": "laptop_d", "E": "laptop_e"},
           "paper": {"A": "paper", "B": "paper_b", "C": "paper_c", "D": "paper_d", "E": "paper_e"}}


@dataclass
class ReproduceConfig(FromParams):
    """Notebook 11's parameters. The self-runs are deliberately tiny (the whole notebook trains every run
    itself in a few minutes on a laptop CPU); `-p preset paper -p epochs 8 -p max_batches None -p
    data_root ...` turns them into the papers' recipes on real data."""

    data_root: str | None = None      # ABAW-layout folder (EXPR files, MTL csv) for the self-runs; None = synthetic faces
    lsd_root: str | None = None       # ABAW4 LSD folders for paper E's self-run; None = synthetic (when data_root is None)
    n_frames: int = 1000              # synthetic only: frames of every self-run's data (train + validation)
    papers: str = "A,B,C,D,E"         # which papers' tables to build
    use_notebook_runs: bool = True    # fill cells from the run folders of notebooks 04-09 where they exist
    self_runs: bool = True            # train a small run for every absent folder; False leaves those cells empty
    preset: str = "laptop"            # "laptop" (CPU-sized, from scratch) or "paper" (each paper's recipe)
    pretrained: bool = False          # timm ImageNet weights in the self-runs (needs the internet once)
    epochs: int = 1                   # epochs of every self-run
    max_batches: int | None = 4       # training batches per epoch in the self-runs; None = whole training split
    members: int = 3                  # paper A's weak ensemble in the self-run: members, each on 1/members of the videos
    transfer: bool = True             # self-run also trains paper A's "DAN TL" (pretrained on cartoon faces, fine-tuned)
    seed: int = 0
    figures_dir: str = "figures"

    def __post_init__(self):
        check_names([self.preset], PRESETS, "preset")
        check_names(self.paper_list, PAPERS, "paper")
        self.require_positive("n_frames", "epochs")
        if self.members < 2:
            raise ValueError(f"members must be >= 2 (an ensemble needs two); got {self.members}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None; got {self.max_batches}")

    @property
    def paper_list(self) -> list[str]:
        return comma_list(self.papers)


    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def train_kwargs(self, paper: str) -> dict[str, Any]:
        """The TrainConfig settings every self-run of `paper` shares."""
        laptop = self.preset == "laptop"
        kw = dict(data_root=self.data_root, n_frames=self.n_frames, epochs=self.epochs, max_batches=self.max_batches,
                  pretrained=self.pretrained, seed=self.seed, progress=False, preset=PRESETS[self.preset][paper])
        if paper in ("A", "E"):   # DAN at 48 px as notebook 09 (heads see a 2x2 map); paper A/E: ResNet-50 at 224
            kw.update(image_size=48 if laptop else None, backbone="resnet18" if laptop else "resnet50")
        if paper == "E":
            kw["data_root"] = self.lsd_root
        return kw


# ----------------------------------------------------------------------------------------------- runs
@dataclass
class Found:
    """One run file as read (metrics.json or ensemble.json) and where it came from."""

    doc: dict
    folder: str        # relative to the output folder, e.g. runs/04_train_dan
    origin: str        # "notebook 04" or "self-run"

    @property
    def best(self) -> dict:
        """The report to quote: the chosen epoch on the test split where the run has one, else on
        validation (the papers' protocol, the only one real Aff-Wild2 allows)."""
        return self.doc.get("test") or self.doc.get("best", {})

    @property
    def config(self) -> dict:
        return self.doc.get("config", {})


@dataclass(frozen=True)
class Job:
    """The runs one notebook makes (in its layout) and notebook 11's small stand-in for them."""

    key: str
    notebook: str | None           # None: no notebook makes these runs, notebook 11 always trains them
    files: dict[str, str]          # role -> file written by the notebook, relative to the output folder
    self_files: dict[str, str]     # role -> the same file written by notebook 11's self-run
    train: Callable[["ReproduceConfig"], None] | None = None
    paper: str = ""                # whose preset the self-run takes

    def unavailable(self, cfg: ReproduceConfig) -> str | None:
        """Why this job's self-run cannot run with these parameters (None: it can)."""
        if self.paper == "E" and cfg.data_root is not None and cfg.lsd_root is None:
            return "paper E trains on the ABAW4 LSD folders: pass -p lsd_root (data_root holds Aff-Wild2)"
        return None


def _fit_all(configs_and_data) -> None:
    from .train import fit
    for cfg, data in configs_and_data:
        fit(cfg, data)


def _record_au_thresholds(metrics_path: Path, run_dir: Path) -> None:
    from .train import record
    record(metrics_path, au_thresholds=au_threshold_study(run_dir))


def _saved_config(saved: dict):
    """A run's saved config (metrics.json, config.json, ensemble.json) as a plain TrainConfig."""
    from .config import TrainConfig
    own = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in own}, "progress": False})


def au_threshold_study(run_dir: str | Path) -> dict:
    """Paper D's per-AU thresholds for a multi-task or AU run folder: its best checkpoint on its own
    validation split (notebook 07 does this for its main run; notebook 11 for every run with an AU head)."""
    from .data.transforms import eval_transform
    from .ensemble import load_member
    from .train import frame_dataset, predict_tasks, split_tables

    run_dir = Path(run_dir) if Path(run_dir).is_absolute() else output_dir() / run_dir
    cfg = _saved_config(json.loads((run_dir / "config.json").read_text()))
    _, val, _, _ = split_tables(cfg)
    dataset = frame_dataset(cfg, val, eval_transform(), "mtl", progress=False)
    outs, targets = predict_tasks(load_member(run_dir).model, dataset)
    return metrics.au_threshold_study(targets["au"], outs["au"], val.videos, seed=cfg.seed)


def _train_ensembles(cfg: ReproduceConfig) -> None:
    """Notebook 09's paper A part, small: DAN from scratch; with `transfer`, DAN pretrained on cartoon
    faces then fine-tuned ("TL") and a weak ensemble fine-tuned from the same start; a weak ensemble from
    scratch; the ensemble of all of them. Writes an ensemble.json in notebook 09's layout."""
    from . import ensemble, train
    from .config import EnsembleStudyConfig

    out = Path(JOBS["09"].self_files["table"]).parent.as_posix()
    settings = dict(**cfg.train_kwargs("A"), model="dan", members=cfg.members, fraction=round(1 / cfg.members, 3),
                    transfer=cfg.transfer, weak_from="pretrain" if cfg.transfer else "scratch",
                    pretrain_frames=cfg.n_frames, pretrain_epochs=cfg.epochs, lsd_members=0, out_dir=out)
    known = {f.name for f in fields(EnsembleStudyConfig)}
    study = EnsembleStudyConfig(**{k: v for k, v in settings.items() if k in known})
    data = train.load_expr_data(study)
    groups = ensemble.train_paper_a(study, data)
    if "DAN Weak Ensemble Scratch" not in groups:      # paper A trained weak ensembles both ways
        weak = study.replace(init_from=None, out_dir=f"{out}/weak_scratch")
        groups["DAN Weak Ensemble Scratch"] = [
            ensemble.Member(f"scratch_member_{i}", r.model.eval(), ensemble.member_config(weak, i))
            for i, r in enumerate(ensemble.train_members(weak, data))]
    members = [m for group in groups.values() for m in group]
    select = ensemble.predict_members(members, data.val) if data.test is not None else None   # as notebook 09:
    pred = ensemble.predict_members(members, data.held_out)       # chosen on validation, reported on test
    table3 = ensemble.paper_a_table(pred, groups, len(data.classes), seed=cfg.seed, select=select)
    train.record(output_dir() / JOBS["09"].self_files["table"], table3=table3.to_dict(orient="records"),
                 config=study.to_dict(), data={"source": data.source})


def _train_clips(cfg: ReproduceConfig) -> None:
    """Notebook 05, small: the per-frame RegNet, then the combine clip model started from it."""
    from . import train
    from .config import ClipConfig

    folder = {role: Path(f).parent.as_posix() for role, f in JOBS["05"].self_files.items()}
    clip = ClipConfig(**cfg.train_kwargs("B"), out_dir=folder["per_frame"], variants="combine", clip_epochs=cfg.epochs)
    frame_cfg = clip.frame_config()
    data = train.load_expr_data(frame_cfg)
    combine = clip.clip_config("combine").replace(out_dir=folder["combine"])
    _fit_all([(frame_cfg, data), (combine, train.as_clips(data, clip.clip_length))])


def _train_scan_cci(cfg: ReproduceConfig) -> None:
    """Notebook 06, small: SCAN+CCI and the plain ResNet-50 on the 7 ABAW 2020 classes."""
    from . import train
    from .config import ScanCCIConfig

    folder = {role: Path(f).parent.as_posix() for role, f in JOBS["06"].self_files.items()}
    c = ScanCCIConfig(**cfg.train_kwargs("C"), model="scan_cci_small" if cfg.preset == "laptop" else "scan_cci",
                      out_dir=folder["scan"], baseline_out_dir=folder["resnet"])
    data = train.load_expr_data(c.train_config())
    _fit_all([(c.train_config(), data), (c.baseline_config(), data)])


def _multitask_config(cfg: ReproduceConfig):
    from .config import MultitaskConfig
    return MultitaskConfig(**cfg.train_kwargs("D"), freeze_epochs=1 if cfg.epochs > 1 else 0, compare=True,
                           out_dir=Path(JOBS["07"].self_files["main"]).parent.as_posix())


def _train_multitask(cfg: ReproduceConfig) -> None:
    """Notebook 07, small: DDAMFN multi-task (heads first, then everything), heads only, one model per
    task; per-AU thresholds for the runs with an AU head."""
    from . import train

    m = _multitask_config(cfg)
    data = train.load_expr_data(m.train_config())
    folders = {role: Path(f).parent.as_posix() for role, f in JOBS["07"].self_files.items()}
    runs = [(m.train_config(out_dir=folders["main"]), data),
            (m.train_config(freeze_epochs=m.epochs, out_dir=folders["heads_only"]), data)]
    runs += [(m.train_config(task=task, out_dir=folders[task]), data) for task in ("va", "expr", "au")]
    _fit_all(runs)
    for role in ("main", "heads_only", "au"):
        _record_au_thresholds(output_dir() / JOBS["07"].self_files[role], output_dir() / folders[role])


def _train_single_heads(cfg: ReproduceConfig) -> None:
    """Paper D Table 4's heads-only single-task models, which notebook 07 does not train: the settings
    of notebook 07's main run when it exists (so the rows compare), else the small self-run's."""
    from . import train

    main = output_dir() / JOBS["07"].files["main"]
    if cfg.use_notebook_runs and main.exists():
        base = _saved_config(json.loads(main.read_text())["config"])
    else:
        base = _multitask_config(cfg).train_config()
    data = train.load_expr_data(base.replace(task="mtl"))
    folders = {role: Path(f).parent.as_posix() for role, f in JOBS["07h"].self_files.items()}
    _fit_all([(base.replace(task=task, freeze_epochs=base.epochs, out_dir=folders[task]), data)
              for task in ("va", "expr", "au")])
    _record_au_thresholds(output_dir() / JOBS["07h"].self_files["au"], output_dir() / folders["au"])


def _train_lsd(cfg: ReproduceConfig) -> None:
    """Notebook 08, small: DAN + landmarks on cartoon faces, validated on photo faces (6 LSD classes)."""
    from . import train
    from .config import SyntheticShiftConfig

    s = SyntheticShiftConfig(**cfg.train_kwargs("E"), compare=False,
                             out_dir=Path(JOBS["08"].self_files["main"]).parent.as_posix())
    train.fit(s.train_config())


def _job(key, notebook, files, self_files=None, train=None, paper=""):
    return Job(key, notebook, {r: f"runs/{f}" for r, f in files.items()},
               {r: f"runs/{f}" for r, f in (self_files or {}).items()}, train, paper)


_07 = "07_train_ddamfn_multitask"
_11 = "11_ddamfn_multitask"
JOBS: dict[str, Job] = {j.key: j for j in (
    _job("04", "04_train_dan", {"main": "04_train_dan/metrics.json"}),
    _job("05", "05_train_regnet_transformer", {"per_frame": "05_per_frame/metrics.json", "combine": "05_combine/metrics.json"},
         {"per_frame": "11_per_frame/metrics.json", "combine": "11_combine/metrics.json"}, _train_clips, "B"),
    _job("06", "06_train_scan_cci", {"scan": "06_train_scan_cci/metrics.json", "resnet": "06_resnet_baseline/metrics.json"},
         {"scan": "11_scan_cci/metrics.json", "resnet": "11_resnet_baseline/metrics.json"}, _train_scan_cci, "C"),
    _job("07", _07, {"main": f"{_07}/metrics.json", "heads_only": f"{_07}_heads_only/metrics.json",
                     **{t: f"{_07}_{t}_only/metrics.json" for t in ("va", "expr", "au")}},
         {"main": f"{_11}/metrics.json", "heads_only": f"{_11}_heads_only/metrics.json",
          **{t: f"{_11}_{t}_only/metrics.json" for t in ("va", "expr", "au")}}, _train_multitask, "D"),
    _job("07h", None, {}, {t: f"11_ddamfn_heads_only_{t}/metrics.json" for t in ("va", "expr", "au")},
         _train_single_heads, "D"),
    _job("08", "08_learning_from_synthetic_data", {"main": "08_learning_from_synthetic_data/metrics.json"},
         {"main": "11_lsd/metrics.json"}, _train_lsd, "E"),
    _job("09", "09_ensembles", {"table": "09_ensembles/ensemble.json"}, {"table": "11_ensembles/ensemble.json"},
         _train_ensembles, "A"),
)}


# -------------------------------------------------------------------------------------------- readers
# A reader turns the run files of one source into the row's metrics {paper's metric name: value}, or
# returns the reason (a string) why these runs cannot fill the row.
Reader = Callable[[list[Found]], "dict[str, float] | str"]


def _classes(run: Found, n: int) -> str | None:
    got = run.config.get("num_classes")
    return None if got in (None, n) else f"{run.folder} has {got} classes; this table scores {n}"


def p_expr(runs: list[Found]) -> dict[str, float] | str:
    """P_EXPR (mean F1 over 8) of a run's best epoch."""
    return _classes(runs[0], 8) or {"P_EXPR": runs[0].best["p_expr"]}


def table3_row(pattern: str) -> Reader:
    """The row of an ensemble.json's paper A Table 3 (notebook 09's layout) whose model matches."""
    def read(runs: list[Found]):
        for row in runs[0].doc.get("table3", []):
            if re.fullmatch(pattern, row["model"]):
                return _classes(runs[0], 8) or {"P_EXPR": row["score"]}
        return (f"{runs[0].folder}/ensemble.json has no such model (its run trained "
                f"{', '.join(r['model'] for r in runs[0].doc.get('table3', [])) or 'none'})")
    return read


def lsd_soft_voting(runs: list[Found]) -> dict[str, float] | str:
    """Paper E's bagging in notebook 09: soft voting over the LSD members."""
    for row in runs[0].doc.get("lsd", {}).get("table", []):
        if row["model"] == "soft voting":
            return {"LSD_F1": row["score"]}
    return f"{runs[0].folder}/ensemble.json holds no paper E bagging (lsd_members 0)"


def lsd_part(run: Found) -> Found:
    """Notebook 09's paper E bagging as a run of its own: its first LSD member's settings (dan_landmarks, 6
    classes, cartoon -> photo) with the ensemble's seed, which drew the faces (a member's own seed only
    draws its start and subset). Without it the row was described, and floored, by the ensemble's 8-class
    DAN settings. The run as it is when notebook 09 trained no LSD members."""
    member = output_dir() / run.folder / "lsd" / "member_0" / "metrics.json"
    if "lsd" not in run.doc or not member.exists():
        return run
    config = json.loads(member.read_text()).get("config", {})
    config = {**config, "seed": run.config.get("seed", config.get("seed"))}
    return Found({**run.doc, "config": config}, f"{run.folder}/lsd", run.origin)


def lsd_f1(runs: list[Found]) -> dict[str, float] | str:
    return {"LSD_F1": runs[0].best["lsd_mean_f1"]}


def c_row(untrained_only: bool = False) -> Reader:
    """F1, Accuracy and ABAW2020 (paper C's Overall) of a 7-class run; `untrained_only` for paper C
    Table 4's "pretrained on none" row, which a run from ImageNet weights does not match."""
    def read(runs: list[Found]):
        run = runs[0]
        if "abaw2020" not in run.best:
            return f"{run.folder} is not a 7-class run (paper C's ABAW 2020 score needs 7 classes)"
        if untrained_only and run.config.get("pretrained"):
            return f"{run.folder} started from ImageNet weights, not from random initialisation"
        return papers.paper_c_row(run.best)
    return read


def _tuned_au(run: Found, run_dir: Path) -> float:
    study = run.doc.get("au_thresholds") or au_threshold_study(run_dir)
    return study["same_frames"]["tuned"]


def d_row(thresholds: bool = False) -> Reader:
    """Paper D's columns from one multi-task run; `thresholds`: AU F1 with per-AU thresholds tuned on the
    validation frames (paper D's way; notebook 07 also reports them tuned on held-out videos)."""
    def read(runs: list[Found]):
        run = runs[0]
        au = _tuned_au(run, output_dir() / run.folder) if thresholds else None
        return papers.paper_d_row(run.best, au)
    return read


def d_single(thresholds: bool = False) -> Reader:
    """Paper D Table 4: one model per task (VA, EXPR, AU), P combines their three numbers."""
    def read(runs: list[Found]):
        va, expr, au = runs
        report = {**va.best, **expr.best, **au.best}
        return papers.paper_d_row(report, _tuned_au(au, output_dir() / au.folder) if thresholds else None)
    return read


# ------------------------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Source:
    """Where a row's numbers come from: some of a job's run files and how to read them."""

    job: str
    roles: tuple[str, ...]
    read: Reader
    note: str = ""     # how the kit's run differs from the paper's row, shown with the value
    view: Callable[[Found], Found] | None = None   # the part of a run file the row is about (lsd_part)


@dataclass(frozen=True)
class Recipe:
    """One row of a paper's table: its kit sources (the first found wins), the self-run used when none
    is found, or the reason the kit cannot run it."""

    paper: str
    table: str
    method: str
    sources: tuple[Source, ...] = ()
    self_run: Source | None = None
    reason: str = ""

    @property
    def runnable(self) -> bool:
        return not self.reason


def _row(paper, table, method, *sources, self_run=None):
    return Recipe(paper, table, method, tuple(sources), self_run if self_run is not None else sources[0])


def _cannot(paper, table, methods, reason):
    return [Recipe(paper, table, m, reason=reason.format(method=m)) for m in methods]


_VGG = ("the organisers' baseline, a VGG16 pretrained on VGGFace: the kit has no VGG16 and no VGGFace weights "
        "(notebooks 04-08 show a majority-class and an untrained reference instead)")
_TEST = "scored by the organisers on the ABAW3 test set, whose labels are not public"
_NO_DATA = "trained with AffectNet and ExpW added: no such data here"
_CAP = ("at most {method} frames per class, with oversampling: fer_kit.train has no per-class cap "
        "(notebook 02 shows the cap on a sampler)")
_SCRATCH = "paper: VGGFace2 weights"
_SINGLE = "one network (paper: an ensemble of bagged networks)"

RECIPES: tuple[Recipe, ...] = tuple([
    # paper A Table 3: notebook 09 trains every row on one dataset; the Scratch row falls back on notebook 04
    *_cannot("A", "Table 3", ["Competition baseline (VGG16 / VGGFace)"], _VGG),
    *_cannot("A", "Table 3", ["DAN (ResNet18) pretrained on AffectNet-8"],
             "needs AffectNet-8 pretraining: the stock DAN trained on AffectNet-8 and applied to Aff-Wild2 "
             "unchanged; no AffectNet here (notebook 09's 'DAN TL' pretrains on another synthetic style)"),
    _row("A", "Table 3", "DAN (ResNet50) TL", Source("09", ("table",), table3_row(r"DAN TL"),
                                                     "pretrained on faces of another style (paper: AffectNet)")),
    _row("A", "Table 3", "DAN (ResNet50) Scratch",
         Source("09", ("table",), table3_row(r"DAN Scratch")), Source("04", ("main",), p_expr)),
    _row("A", "Table 3", "DAN (ResNet50) Weak Ensemble TL",
         Source("09", ("table",), table3_row(r"DAN Weak Ensemble TL( \(soft\))?"),
                "members fine-tuned from that pretrained run on subsets, soft voting")),
    _row("A", "Table 3", "DAN (ResNet50) Weak Ensemble Scratch",
         Source("09", ("table",), table3_row(r"DAN Weak Ensemble( Scratch)?( \(soft\))?"),
                "members from scratch on subsets, soft voting")),
    _row("A", "Table 3", "DAN (ResNet50) Ensemble",
         Source("09", ("table",), table3_row(r"DAN Ensemble: all \d+ models \(soft\)"), "soft voting over every model")),
    *_cannot("A", "Table 4", ["Competition baseline"], "the organisers' baseline " + _TEST),
    *_cannot("A", "Table 4", ["USTC-NELSLIP", "dgu", "PRL", "HSE-NN", "AlphaAff", "Netease Fuxi Virtual Human"],
             "a test-set leaderboard entry of another ABAW3 team ({method}), " + _TEST),
    *_cannot("A", "Table 4", ["Ours (DAN Ensemble)"],
             "paper A's submission " + _TEST + "; its validation counterpart is Table 3's 'DAN (ResNet50) Ensemble'"),
    # paper B Table 2: notebook 05's combine clip model
    *_cannot("B", "Table 2", ["Baseline (VGG16 / VGGFace)"], _VGG),
    _row("B", "Table 2", "RegNet + Attention + Transformer (combine)",
         Source("05", ("combine",), p_expr, "paper: RegNetY-1.6GF from ImageNet, clips of 64 frames")),
    # paper C: notebook 06's SCAN+CCI and plain ResNet-50, both from random initialisation
    *_cannot("C", "Table 1", ["Competition baseline"],
             "the ABAW 2020 organisers' baseline network: not in the kit"),
    *_cannot("C", "Table 1", ["ICT-VIPL-Expression"], "another ABAW 2020 team's method (it also used audio): not in the kit"),
    _row("C", "Table 1", "SCAN+CCI (Ours)", Source("06", ("scan",), c_row(), _SCRATCH)),
    _row("C", "Table 2", "ResNet-50", Source("06", ("resnet",), c_row(), _SCRATCH)),
    _row("C", "Table 2", "SCAN+CCI", Source("06", ("scan",), c_row(), _SCRATCH)),
    *_cannot("C", "Table 3", [f"SCAN+CCI; Aff-Wild2 max {n} samples/class" for n in ("15K", "20K", "50K", "1 Lakh")],
             _CAP.replace("{method}", "15K-100K")),
    _row("C", "Table 3", "SCAN+CCI; Aff-Wild2 max All samples/class",
         Source("06", ("scan",), c_row(), _SCRATCH + ", no cap either")),
    *_cannot("C", "Table 3", [f"SCAN+CCI; Aff-Wild2+AffectNet+ExpW max {n} samples/class" for n in ("20K", "50K", "1 Lakh")],
             _NO_DATA),
    _row("C", "Table 4", "SCAN+CCI pretrained on none", Source("06", ("scan",), c_row(untrained_only=True))),
    *_cannot("C", "Table 4", ["SCAN+CCI pretrained on AffectNet+RAFDB", "SCAN+CCI pretrained on AffectNet+ExpW",
                              "SCAN+CCI pretrained on AffectNet+ExpW+RAFDB"],
             "pretrained on {method}: no such data here".replace("{method}", "AffectNet, ExpW or RAF-DB")),
    *_cannot("C", "Table 4", ["SCAN+CCI pretrained on VGGFace2"],
             "needs the VGGFace2-pretrained ResNet-50 weights, which the kit does not ship"),
    # paper D: notebook 07's runs; the heads-only single-task models are notebook 11's own
    _row("D", "Table 3", "DDAMFN fine-tuned (multi-task)", Source("07", ("main",), d_row())),
    _row("D", "Table 3", "DDAMFN fine-tuned (multi-task) + AU thresholds", Source("07", ("main",), d_row(True))),
    _row("D", "Table 3", "Custom classifier: heads only (multi-task)", Source("07", ("heads_only",), d_row())),
    _row("D", "Table 3", "Custom classifier: heads only (multi-task) + AU thresholds",
         Source("07", ("heads_only",), d_row(True))),
    _row("D", "Table 4", "DDAMFN fine-tuned (single-task)", Source("07", ("va", "expr", "au"), d_single())),
    _row("D", "Table 4", "DDAMFN fine-tuned (single-task) + AU thresholds",
         Source("07", ("va", "expr", "au"), d_single(True))),
    Recipe("D", "Table 4", "Custom classifier: heads only (single-task)",
           self_run=Source("07h", ("va", "expr", "au"), d_single())),
    Recipe("D", "Table 4", "Custom classifier: heads only (single-task) + AU thresholds",
           self_run=Source("07h", ("va", "expr", "au"), d_single(True))),
    # paper E: notebook 09's bagged ensemble, else notebook 08's single network
    *_cannot("E", "Section 3", ["Challenge baseline"],
             "the organisers' LSD baseline (an ImageNet ResNet-50): the kit trains the 6 LSD classes only with "
             "paper E's dan_landmarks"),
    _row("E", "Section 3", "DAN + landmark multi-task ensemble (preliminary)",
         Source("09", ("table",), lsd_soft_voting, "soft voting over bags of 20%", view=lsd_part),
         Source("08", ("main",), lsd_f1, _SINGLE), self_run=Source("08", ("main",), lsd_f1, _SINGLE)),
])


def recipe_table() -> pd.DataFrame:
    """Every recipe in words: which run fills each row, or why it cannot run."""
    rows = []
    for r in RECIPES:
        where = [f"notebook {JOBS[s.job].notebook[:2]}: " + ", ".join(Path(JOBS[s.job].files[x]).parent.name for x in s.roles)
                 for s in r.sources]
        if r.self_run is not None:
            where.append("self-run: " + ", ".join(Path(JOBS[r.self_run.job].self_files[x]).parent.name
                                                  for x in r.self_run.roles))
        rows.append({"paper": r.paper, "table": r.table, "method": r.method,
                     "kit runs (first found wins)": " | ".join(where) if r.runnable else "",
                     "why the kit cannot run it": r.reason})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- collect
def dataset_label(run: Found) -> str:
    """The kit data a run was measured on, in a few words and without machine paths."""
    cfg = run.config
    if cfg.get("data_root"):
        return f"data at {Path(cfg['data_root']).name}"
    style, val_style = cfg.get("style", "photo"), cfg.get("val_style")
    if val_style and val_style != style:
        return f"synthetic faces, {style} -> {val_style}"
    return "synthetic faces" if style == "photo" else f"synthetic {style} faces"


def describe(run: Found) -> str:
    """What was trained, from the run's config."""
    c = run.config
    model = c.get("model", "?")
    if model in ("dan", "dan_landmarks", "resnet_classifier", "regnet_transformer"):
        model += f" {c.get('backbone')}"
    epochs = c.get("epochs")
    length = (f"{c['minutes']:g} minutes" if c.get("minutes") else f"{c['steps']} steps" if c.get("steps")
              else f"{epochs} epoch{'s' if epochs != 1 else ''}")
    text = f"{model}, {c.get('image_size')} px, {length}"
    if c.get("max_batches"):
        text += f" of {c['max_batches']} batches"
    if "members" in c and "table3" in run.doc:
        text += f", {c['members']} members"
    if c.get("pretrained"):
        return text + ", ImageNet init"
    return text + (f", started from {Path(c['init_from']).parent.name}" if c.get("init_from") else ", random init")


def floor(run: Found) -> dict[str, float]:
    """What knowing only the training labels scores on the split the run reports (test where there are
    test labels, else validation, as `LoadedData.held_out`), in the table's metrics: the majority class
    (paper D: mean valence-arousal, majority class, no AU active). A kit value near its floor means the
    run has not learnt yet, whatever the paper printed."""
    from .baselines import trivial_multitask
    from .config import is_lsd_model
    from .train import split_tables

    cfg = _saved_config(run.config)
    mtl = cfg.model.startswith("ddamfn")
    train_t, val_t, test_t, _ = split_tables(cfg.replace(task="mtl") if mtl else cfg)
    held = val_t if test_t is None else test_t
    if mtl:
        return papers.paper_d_row(trivial_multitask(train_t, held))
    n = len(train_t.classes)
    pred = np.full_like(held.labels, np.bincount(train_t.labels, minlength=n).argmax())
    report = metrics.expr_report(held.labels, pred, num_classes=n, class_names=list(train_t.classes))
    if is_lsd_model(cfg.model):
        return {"LSD_F1": report["p_expr"]}
    return papers.paper_c_row(report) if n == 7 else {"P_EXPR": report["p_expr"]}


def _floors(rows: list[dict], found: dict) -> dict:
    """One floor per table, on the data of its first filled row (None where that data cannot be read)."""
    out, memo = {}, {}
    for row in rows:
        key = (row["paper"], row["table"])
        if key in out or (row["paper"], row["table"], row["method"]) not in found:
            continue
        run = found[(row["paper"], row["table"], row["method"])]
        data = json.dumps({k: run.config.get(k) for k in ("data_root", "n_frames", "balance", "seed", "style",
                                                         "val_style", "num_classes", "model")}, sort_keys=True)
        if data not in memo:
            try:
                memo[data] = floor(run)
            except (FileNotFoundError, ValueError, KeyError) as err:   # e.g. a data_root that moved
                memo[data] = None
                print(f"no floor for {run.folder}: {err}")
        out[key] = (memo[data], run) if memo[data] else None
    return out


@dataclass
class Reproduction:
    """Everything notebook 11 shows: `cells` (one row per reported figure), `rows` (one per table row:
    where its kit numbers came from or why there are none), `runs` (which folders were found, which
    were trained here and how long that took) and `floors` ((paper, table) -> (the majority-class floor
    in the table's metrics, the run whose data it was measured on))."""

    cells: pd.DataFrame
    rows: pd.DataFrame
    runs: pd.DataFrame
    config: ReproduceConfig
    floors: dict


def _read_files(job: Job, roles, own: bool, cache: dict) -> list[Found] | None:
    files = job.self_files if own else job.files
    found = []
    for role in roles:
        if role not in files:
            return None
        path = output_dir() / files[role]
        if path not in cache:
            cache[path] = json.loads(path.read_text()) if path.exists() else None
        if cache[path] is None:
            return None
        origin = "self-run" if own else f"notebook {job.notebook[:2]}"
        found.append(Found(cache[path], Path(files[role]).parent.as_posix(), origin))
    return found


def _try(source: Source, own: bool, cache: dict):
    """(values or reason, runs) of one source, or None when its files are absent."""
    runs = _read_files(JOBS[source.job], source.roles, own, cache)
    if runs is not None and source.view is not None:
        runs = [source.view(r) for r in runs]
    return None if runs is None else (source.read(runs), runs)


def collect(cfg: ReproduceConfig, log: Callable[[str], None] = print) -> Reproduction:
    """Fill every recipe of cfg's papers: notebook run folders first, then self-runs for what is absent
    (each job trained once, its training log written beside its runs), then the reasons."""
    recipes = [r for r in RECIPES if r.paper in cfg.paper_list]
    cache, outcome = {}, {}
    for r in recipes:      # 1. the notebooks' runs
        if r.runnable and cfg.use_notebook_runs:
            tried = [t + (s,) for s in r.sources if (t := _try(s, False, cache)) is not None]
            filled = [t for t in tried if isinstance(t[0], dict)]
            outcome[r] = filled[0] if filled else (tried[0] if tried else None)
    needed = []            # 2. a self-run where a row is empty because the notebook's run is absent
    for r in recipes:
        if r.runnable and r.self_run and r.self_run.job not in needed and \
                not isinstance((outcome.get(r) or ("",))[0], dict) and \
                (not cfg.use_notebook_runs or _read_files(JOBS[r.self_run.job], r.self_run.roles, False, cache) is None):
            needed.append(r.self_run.job)
    timings, skipped = {}, {}
    for key in [k for k in JOBS if k in needed]:
        job = JOBS[key]
        skipped[key] = ("self_runs is False" if not cfg.self_runs else job.unavailable(cfg))
        if skipped[key]:
            continue
        folders = sorted({Path(f).parent.as_posix() for f in job.self_files.values()})
        why = f"notebook {job.notebook[:2]}'s runs absent" if job.notebook else "no notebook trains these"
        log_path = output_dir() / "runs" / "11_logs" / f"{key}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log_path, "w", buffering=1) as f, contextlib.redirect_stdout(f):   # line by line
            job.train(cfg)
        timings[key] = time.perf_counter() - t0
        log(f"{why}: trained {', '.join(folders)} in {timings[key]:.0f} s (log: runs/11_logs/{key}.log)")
    rows, cells, found = [], [], {}
    for r in recipes:      # 3. every row: values and where they came from, or why not
        values, runs, note, reason = {}, [], "", r.reason
        got = outcome.get(r)
        if r.runnable and not (got and isinstance(got[0], dict)) and r.self_run:
            own = _try(r.self_run, True, cache) if r.self_run.job in timings else None   # trained just now
            if own is not None:
                got = own + (r.self_run,)
        if got and isinstance(got[0], dict):
            values, runs, note = got[0], got[1], got[2].note
            found[(r.paper, r.table, r.method)] = runs[0]
        elif r.runnable:
            reason = _absent_reason(r, got, skipped)
        status = ("not runnable" if not r.runnable else "not run" if not values
                  else "self-run" if runs[0].origin == "self-run" else "notebook run")
        folder = ", ".join(x.folder for x in runs)
        dataset = dataset_label(runs[0]) if runs else ""
        rows.append({"paper": r.paper, "table": r.table, "method": r.method, "status": status, "dataset": dataset,
                     "run folder": folder, "origin": runs[0].origin if runs else "",
                     "kit run": f"{describe(runs[0])}" + (f"; {note}" if note else "") if runs else "",
                     "reason": reason})
        for metric, value in values.items():
            cells.append({"paper": r.paper, "table": r.table, "method": r.method, "metric": metric,
                          "kit": float(value), "kit_text": f"{value:.3f} ({dataset}, {folder})"})
    return Reproduction(cells=_with_reported(pd.DataFrame(cells), recipes), rows=pd.DataFrame(rows),
                        runs=_runs_table(needed, timings, skipped, cfg, cache), config=cfg,
                        floors=_floors(rows, found))


def _absent_reason(r: Recipe, got, skipped: dict) -> str:
    if got and isinstance(got[0], str):
        return got[0]
    nb = [f"notebook {JOBS[s.job].notebook[:2]}" for s in r.sources]
    if r.self_run and skipped.get(r.self_run.job):
        return f"not run here ({skipped[r.self_run.job]}); run {' or '.join(nb) or 'notebook 11 with self_runs'}"
    return f"no run folder of {' or '.join(nb)} and no self-run"


def _with_reported(cells: pd.DataFrame, recipes) -> pd.DataFrame:
    """Every reported figure of the recipes' tables, with the kit's value where there is one."""
    rep = papers._csv(as_text=True)
    keep = {(r.paper, r.table) for r in recipes}
    rep = rep[[(p, t) in keep for p, t in zip(rep["paper"], rep["table"])]]
    rep = rep.rename(columns={"value": "reported_text"})[["paper", "table", "method", "metric", "dataset", "split",
                                                           "reported_text"]]
    rep["reported"] = rep["reported_text"].astype(float)
    if cells.empty:
        cells = pd.DataFrame(columns=["paper", "table", "method", "metric", "kit", "kit_text"])
    return rep.merge(cells, on=["paper", "table", "method", "metric"], how="left").reset_index(drop=True)


def _runs_table(needed, timings, skipped, cfg, cache) -> pd.DataFrame:
    rows = []
    for key, job in JOBS.items():
        if job.notebook is None and key not in needed:
            continue
        present = [Path(f).parent.as_posix() for f in job.files.values() if cache.get(output_dir() / f) is not None]
        rows.append({"notebook": job.notebook or "(none: notebook 11's own runs)",
                     "its run folders": ", ".join(sorted({Path(f).parent.as_posix() for f in job.files.values()})),
                     "found": ", ".join(present) if present else ("not read" if not cfg.use_notebook_runs else "none"),
                     "self-run": ("trained: " + ", ".join(sorted({Path(f).parent.as_posix() for f in job.self_files.values()}))
                                  if key in timings else (f"skipped: {skipped[key]}" if skipped.get(key) else "not needed")),
                     "seconds": round(timings[key]) if key in timings else None})
    return pd.DataFrame(rows)


def save(rep: Reproduction, folder: str = "runs/11_reproduction") -> Path:
    """The reproduction as data: cells.csv (one line per reported figure, with the kit's value and its
    text) and rows.csv (one line per table row: status, data, run folder or reason)."""
    out = output_dir() / folder
    out.mkdir(parents=True, exist_ok=True)
    rep.cells.to_csv(out / "cells.csv", index=False)
    rep.rows.to_csv(out / "rows.csv", index=False)
    return out


# ------------------------------------------------------------------------------------------ showing
def tables_of(rep: Reproduction, paper: str) -> list[str]:
    """The tables of `paper` this reproduction built, in the paper's order (none if not selected)."""
    return [t for p, t in papers.tables() if p == paper and p in rep.config.paper_list]


def table(rep: Reproduction, paper: str, table_name: str) -> pd.DataFrame:
    """One table in the paper's layout: each metric as printed beside the kit's value, then the kit's
    dataset and run folder, or why there is no kit value."""
    cells = rep.cells[(rep.cells["paper"] == paper) & (rep.cells["table"] == table_name)]
    rows = rep.rows[(rep.rows["paper"] == paper) & (rep.rows["table"] == table_name)].set_index("method")
    metric_order = list(dict.fromkeys(cells["metric"]))
    out = []
    for method, g in cells.groupby("method", sort=False):
        row = {"method": method, "dataset": g["dataset"].iloc[0], "split": g["split"].iloc[0]}
        by = g.set_index("metric")
        for m in metric_order:
            row[m] = by.loc[m, "reported_text"] if m in by.index else ""
            row[f"{m} kit"] = _num(by.loc[m, "kit"]) if m in by.index and pd.notna(by.loc[m, "kit"]) else "—"
        info = rows.loc[method]
        row["kit: dataset, run folder"] = (f"{info['dataset']}, {info['run folder']} ({info['origin']})"
                                           if info["status"] in ("self-run", "notebook run") else f"not run: {info['reason']}")
        row["kit run"] = info["kit run"]
        out.append(row)
    if rep.floors.get((paper, table_name)):
        values, run = rep.floors[(paper, table_name)]
        name = "kit floor: trivial predictor" if paper == "D" else "kit floor: majority class"
        out.append({"method": name, "dataset": "", "split": "", **{m: "" for m in metric_order},
                    **{f"{m} kit": _num(values[m]) for m in metric_order if m in values},
                    "kit: dataset, run folder": f"{dataset_label(run)}, {run.folder}",
                    "kit run": "knows only the training labels: a kit value near it has not learnt yet"})
    return pd.DataFrame(out)


def _num(value: float) -> str:
    return f"{round(float(value), 3) + 0.0:.3f}"     # + 0.0: no "-0.000" for a CCC of -1e-5


def not_run(rep: Reproduction) -> pd.DataFrame:
    """The rows without a kit value and why."""
    df = rep.rows[rep.rows["status"].isin(["not runnable", "not run"])]
    return df[["paper", "table", "method", "status", "reason"]].reset_index(drop=True)


def coverage(rep: Reproduction) -> pd.DataFrame:
    """Per table: rows, filled from a notebook's run, filled by a self-run, not run, not runnable."""
    counts = pd.crosstab([rep.rows["paper"], rep.rows["table"]], rep.rows["status"])
    order = list(dict.fromkeys(zip(rep.rows["paper"], rep.rows["table"])))
    df = counts.reindex(pd.MultiIndex.from_tuples(order, names=["paper", "table"]))
    for col in ("notebook run", "self-run", "not run", "not runnable"):
        if col not in df:
            df[col] = 0
    df.insert(0, "rows", df.sum(axis=1))
    df.columns.name = None
    return df[["rows", "notebook run", "self-run", "not run", "not runnable"]].reset_index()


# (paper, table a, method a, table b, method b, metric, what the paper's comparison says)
PATTERNS = (
    ("A", "Table 3", "DAN (ResNet50) Ensemble", "Table 3", "DAN (ResNet50) Scratch", "P_EXPR",
     "the ensemble of every model beats one model from scratch"),
    ("A", "Table 3", "DAN (ResNet50) Weak Ensemble Scratch", "Table 3", "DAN (ResNet50) Scratch", "P_EXPR",
     "weak members on sub-samples, voted, beat one model on all the data"),
    ("A", "Table 3", "DAN (ResNet50) TL", "Table 3", "DAN (ResNet50) Scratch", "P_EXPR",
     "transfer learning vs from scratch (paper A: from scratch won)"),
    ("C", "Table 2", "SCAN+CCI", "Table 2", "ResNet-50", "ABAW2020", "SCAN+CCI beats a plain ResNet-50"),
    ("D", "Table 3", "DDAMFN fine-tuned (multi-task) + AU thresholds", "Table 3", "DDAMFN fine-tuned (multi-task)",
     "F1_AU", "per-AU thresholds raise the AU F1"),
    ("D", "Table 3", "DDAMFN fine-tuned (multi-task)", "Table 3", "Custom classifier: heads only (multi-task)", "P",
     "fine-tuning everything beats training the heads only"),
    ("D", "Table 4", "DDAMFN fine-tuned (single-task)", "Table 3", "DDAMFN fine-tuned (multi-task)", "P",
     "one model per task beats one multi-task model"),
)


def patterns(rep: Reproduction) -> pd.DataFrame:
    """Each paper's comparisons: the difference the paper printed, the kit's, and whether they agree in
    sign. The kit's sign means something only when both its rows are above their floor (the runs learnt
    something) and come from the same job (one dataset, one recipe)."""
    cells = rep.cells.set_index(["paper", "table", "method", "metric"])
    where = rep.rows.set_index(["paper", "table", "method"])
    out = []
    for paper, ta, a, tb, b, metric, claim in PATTERNS:
        if (paper, ta, a, metric) not in cells.index or (paper, tb, b, metric) not in cells.index:
            continue
        ca, cb = cells.loc[(paper, ta, a, metric)], cells.loc[(paper, tb, b, metric)]
        d_paper, d_kit = ca["reported"] - cb["reported"], ca["kit"] - cb["kit"]
        fa, fb = where.loc[(paper, ta, a), "run folder"], where.loc[(paper, tb, b), "run folder"]
        floors = [(rep.floors.get((paper, t)) or ({},))[0].get(metric) for t in (ta, tb)]
        above = "—" if pd.isna(d_kit) or None in floors else \
            "yes" if ca["kit"] > floors[0] and cb["kit"] > floors[1] else "no"
        out.append({"paper": paper, "comparison": claim, "metric": metric, "paper: a - b": round(d_paper, 4),
                    "kit: a - b": round(d_kit, 4) if pd.notna(d_kit) else None,
                    "same sign": "—" if pd.isna(d_kit) else ("yes" if np.sign(d_kit) == np.sign(d_paper) else "no"),
                    "kit rows above floor": above,
                    "kit rows from": "—" if pd.isna(d_kit) else (fa if fa == fb else f"{fa} | {fb}")})
    return pd.DataFrame(out)


# each table's headline metric (paper C's "Overall", paper D's P); the tables show the others
HEADLINE = ("P_EXPR", "ABAW2020", "P", "LSD_F1")


def headline_gaps(rep: Reproduction) -> pd.DataFrame:
    """Each filled cell of a table's headline metric: the paper's value, the kit's, the kit's floor and
    the two distances. kit - paper measures data, scale and training time; kit - floor says whether the
    kit's run learnt anything at all (the only part of a level a small run can speak to)."""
    cells = rep.cells[rep.cells["metric"].isin(HEADLINE) & rep.cells["kit"].notna()]
    floors = [(rep.floors.get((p, t)) or ({},))[0].get(m) for p, t, m in zip(cells["paper"], cells["table"], cells["metric"])]
    out = cells[["paper", "table", "method", "metric", "reported", "kit"]].assign(floor=[np.nan if f is None else float(f) for f in floors])
    return out.assign(kit_minus_paper=out["kit"] - out["reported"], kit_minus_floor=out["kit"] - out["floor"]).reset_index(drop=True)


def plot_paper(rep: Reproduction, paper: str, path=None):
    """Reported vs kit on each table's headline metric, one pair of bars per row the kit filled, one
    panel per table; a black tick marks the kit's floor (training labels only) on the same data."""
    import matplotlib.pyplot as plt

    from .plots import _save

    cells = rep.cells[(rep.cells["paper"] == paper) & rep.cells["kit"].notna() & rep.cells["metric"].isin(HEADLINE)]
    tables = list(dict.fromkeys(cells["table"]))
    if not tables:
        fig, ax = plt.subplots(figsize=(7, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"paper {paper}: no kit values in this run", ha="center", va="center")
        return _save(fig, path)
    heights = [len(cells[cells["table"] == t]) + 1 for t in tables]
    fig, axes = plt.subplots(len(tables), 1, figsize=(9, 0.6 * sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, t in zip(axes[:, 0], tables):
        g = cells[cells["table"] == t].iloc[::-1]
        metric, y = g["metric"].iloc[0], np.arange(len(g))
        ax.barh(y + 0.2, g["reported"], height=0.4, color="0.6", label="reported (paper)")
        ax.barh(y - 0.2, g["kit"], height=0.4, color="tab:blue", label="kit (this run)")
        for yi, (rv, kv) in enumerate(zip(g["reported"], g["kit"])):
            ax.text(rv, yi + 0.2, f" {rv:.3f}", va="center", fontsize=7)
            ax.text(max(kv, 0), yi - 0.2, f" {kv:.3f}", va="center", fontsize=7)
        if rep.floors.get((paper, t)) and metric in rep.floors[(paper, t)][0]:
            ax.scatter(np.full(len(y), rep.floors[(paper, t)][0][metric]), y - 0.2, marker="|", s=260, color="k",
                       zorder=3, label="kit floor (training labels only)")
        ax.set_yticks(y, [_short(m) for m in g["method"]], fontsize=8)
        ax.set_xlim(0, max(1.0, float(np.nanmax(g[["reported", "kit"]].to_numpy()))) * 1.15)
        ax.set(title=f"paper {paper}, {t}", xlabel=metric)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Paper {paper}: reported (real data, the paper's networks) vs the kit (this run's data)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
