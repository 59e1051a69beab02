"""Ensembles: members trained on subsets of the training split, combined by voting.

Paper A's headline result (Table 3) is an ensemble: "weak" DAN models, each trained on a sub-sample of
the data, and the "DAN Ensemble" of every variant it trained (different backbones, from scratch and
transfer-learned). Paper E bags models trained on 20% subsets of the LSD faces. Both papers combine
members by averaging their softmax probabilities ("soft voting"); paper A's published code sums the raw
logits instead (notes §1), offered here as `logit_sum` and labelled as the code's way.

Every member is an ordinary run folder (config, history, metrics, best.pt), so any run the kit trained,
from a notebook or the command line, can join an ensemble. Predictions of all members come from one
pass over the data: each batch is taken from the dataset and normalised once, then every member runs on
it (`predict_members`).

    python -m fer_kit.ensemble --members 5 --fraction 0.2 --epochs 3 --out_dir runs/09_ensemble
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import metrics
from .config import EnsembleConfig, EnsembleStudyConfig, TrainConfig, pretraining
from .data.clips import ClipDataset
from .data.dataset import FrameDataset
from .data.sampling import bagging_subsets
from .metrics import gain_sentence, paired_gain  # noqa: F401  (part of this module's API: notebook 09)
from .paths import output_dir, shown
from .train.evaluate import device_batches
from .train.precision import resolve as resolve_precision
from .train import ExprData, config_parser, fit, load_expr_data, load_run, record

COMBINERS = ("soft", "logit_sum", "weighted")


# --------------------------------------------------------------------------------------------- members
def member_data(data, index: np.ndarray):
    """The run's data with the training split narrowed to `index` (repeats allowed, for bootstrap
    subsets). Decoded frames are indexed, not decoded again; validation is untouched."""
    train = data.train
    if isinstance(train, ClipDataset):
        raise ValueError("ensemble members are trained on frames; clip models (paper B) join an ensemble "
                         "through their run folders (`load_member`)")
    return ExprData(train=train.subset(index), val=data.val, test=data.test, classes=data.classes, source=data.source)


def member_subsets(cfg: EnsembleConfig, data) -> list[np.ndarray]:
    """Seeded index sets of the training split, one per member: whole videos drawn without replacement
    (`fraction`, paper E's 20%) or with replacement (`bootstrap`), so no member splits a video."""
    return bagging_subsets(len(data.train), cfg.members, fraction=cfg.fraction, bootstrap=cfg.bootstrap,
                           seed=cfg.seed, groups=data.train.table.videos)


def member_config(cfg: EnsembleConfig, i: int) -> TrainConfig:
    """Member i: the ensemble's training settings with its own seed and run folder."""
    return cfg.train_config(seed=cfg.seed + 1 + i, out_dir=f"{cfg.out_dir}/member_{i}")


def train_members(cfg: EnsembleConfig, data) -> list:
    """Train cfg.members runs on seeded subsets of data.train (weighted sampling inside each subset, as
    the loop does for any run); each becomes a run folder `<out_dir>/member_<i>`. Returns RunResults."""
    results = []
    for i, index in enumerate(member_subsets(cfg, data)):
        mcfg = member_config(cfg, i)
        print(f"member {i + 1}/{cfg.members}: {len(index):,} training frames "
              f"({len(np.unique(data.train.table.videos[index]))} videos) -> {mcfg.out_dir}")
        results.append(fit(mcfg, member_data(data, index)))
        record(results[-1].metrics_path, ensemble_subset={"frames": int(len(index)), "bootstrap": cfg.bootstrap,
                                                         "fraction": cfg.fraction})
    return results


@dataclass
class Member:
    """A trained model ready for inference, with the settings it was trained with."""

    name: str
    model: nn.Module
    config: TrainConfig


def load_member(run_dir: str | Path, name: str | None = None) -> Member:
    """A run folder's best checkpoint as an ensemble member (any registry model the loop trains)."""
    model, cfg = load_run(run_dir)
    return Member(name=name or Path(run_dir).name, model=model, config=cfg)


def train_paper_a(cfg: EnsembleStudyConfig, data) -> dict[str, list[Member]]:
    """Paper A Table 3's models on one dataset, each an ordinary run folder under cfg.out_dir:
    "DAN Scratch" (the whole training split); with cfg.transfer, "DAN TL" (pretrained on faces of
    cfg.pretrain_style of other people, then fine-tuned: the kit's stand-in for paper A's AffectNet
    pretraining); and the weak ensemble's members on subsets, started from that pretrained run ("DAN
    Weak Ensemble TL") or from scratch (cfg.weak_from). Returns the members of each group."""
    def as_member(name, result, run_cfg):
        return Member(name=name, model=result.model.eval(), config=run_cfg)

    scratch_cfg = cfg.train_config(out_dir=f"{cfg.out_dir}/scratch")
    groups = {"DAN Scratch": [as_member("scratch", fit(scratch_cfg, data), scratch_cfg)]}
    weak = cfg
    if cfg.transfer or cfg.weak_from == "pretrain":
        pre_cfg = pretrain_config(cfg)
        print(f"pretraining on synthetic {cfg.pretrain_style} faces of other people -> {pre_cfg.out_dir}")
        fit(pre_cfg)
        pretrained = f"{pre_cfg.out_dir}/best.pt"
        if cfg.transfer:
            tl_cfg = cfg.train_config(init_from=pretrained, out_dir=f"{cfg.out_dir}/transfer")
            groups["DAN TL"] = [as_member("transfer", fit(tl_cfg, data), tl_cfg)]
        if cfg.weak_from == "pretrain":
            weak = cfg.replace(init_from=pretrained)
    results = train_members(weak, data)
    name = "DAN Weak Ensemble TL" if weak.init_from else "DAN Weak Ensemble Scratch"
    groups[name] = [as_member(f"member_{i}", r, member_config(weak, i)) for i, r in enumerate(results)]
    return groups


def pretrain_config(cfg: EnsembleStudyConfig) -> TrainConfig:
    """The run the transfer-learned models start from (`config.pretraining`): DAN on synthetic faces of
    cfg.pretrain_style and other people, whatever the dataset of the study."""
    return pretraining(cfg, cfg.pretrain_style, cfg.pretrain_frames, cfg.pretrain_epochs,
                       f"{cfg.out_dir}/pretrain_{cfg.pretrain_style}")


def bag_lsd(cfg: EnsembleStudyConfig, init_from: str | None = None):
    """Paper E's bagging: cfg.lsd_members DAN + landmark models (its `dan_landmarks`), each on 20% of the
    6-class training faces (cartoon style, the synthetic training domain), validated on photo faces.
    `init_from` starts each member's emotion branch from a DAN run (paper E pretrained that branch on
    AffectNet, ExpW and AIHUB; DAN's trunk and heads have the same names and shapes there).
    Returns (members, the ExprData of their splits, classes)."""
    lsd_cfg = EnsembleConfig(**{**cfg.train_config().to_dict(), "model": "dan_landmarks", "num_classes": 6,
                                "style": "cartoon", "val_style": "photo", "weighted_sampling": False,
                                "epochs": cfg.lsd_epochs, "members": cfg.lsd_members, "fraction": 0.2,
                                "bootstrap": False, "landmark_backbone": "resnet18", "preset": "laptop_e",
                                "lr": None, "batch_size": None, "init_from": init_from,
                                "init_min_share": 0.6,   # a DAN run fills the emotion branch: 268 of 420 tensors
                                "out_dir": f"{cfg.out_dir}/lsd"})
    data = load_expr_data(lsd_cfg)
    results = train_members(lsd_cfg, data)
    members = [Member(name=f"lsd_member_{i}", model=r.model.eval(), config=member_config(lsd_cfg, i))
               for i, r in enumerate(results)]
    return members, data, data.classes


# ----------------------------------------------------------------------------------------- inference
@dataclass
class MemberPredictions:
    """Every member's outputs on one split, frame-aligned: expression logits (K, N, C) and, for
    multi-task members (paper D), valence-arousal (K, N, 2) and AU probabilities (K, N, 12)."""

    names: list[str]
    logits: np.ndarray
    labels: np.ndarray
    videos: np.ndarray
    va: np.ndarray | None = None
    au: np.ndarray | None = None

    @property
    def member_preds(self) -> np.ndarray:
        return self.logits.argmax(-1)                                     # (K, N)


def _expr_output(out) -> torch.Tensor:
    if hasattr(out, "expr") and out.expr is not None:                    # paper D: EXPR head
        return out.expr
    return out.logits if hasattr(out, "logits") else out


@torch.inference_mode()
def predict_members(members: list[Member], dataset: FrameDataset, batch_size: int = 256,
                    device: str | torch.device = "cpu", progress: bool = False) -> MemberPredictions:
    """All members over one split in one pass: each batch is read and normalised (on the device) once,
    resized for any member trained at another size, and run through every member (paper A's
    heterogeneous ensemble)."""
    if isinstance(dataset, ClipDataset):
        raise ValueError("predict_members takes a frame dataset; evaluate clip models with train.predict")
    device = torch.device(device)
    models = [m.model.to(device).eval() for m in members]
    # each member in the precision its own evaluation used, so its column here is its own predictions
    policies = [resolve_precision(m.config.precision, device, model) for m, model in zip(members, models)]
    size = dataset.image_size
    n = len(dataset)
    logits, va, au = None, None, None
    e = 0
    for x, _ in device_batches(dataset, batch_size, device, progress, desc="ensemble"):
        s, e = e, e + len(x)
        for k, (member, model, policy) in enumerate(zip(members, models, policies)):
            xi = x if member.config.image_size == size else nn.functional.interpolate(
                x, size=(member.config.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
            with policy.autocast():
                out = model(xi)
            z = _expr_output(out).float().cpu().numpy()
            if logits is None:
                logits = np.zeros((len(members), n, z.shape[1]), np.float32)
            logits[k, s:e] = z
            if getattr(out, "va", None) is not None:
                va = np.full((len(members), n, 2), np.nan, np.float32) if va is None else va
                va[k, s:e] = out.va.float().cpu().numpy()
            if getattr(out, "au", None) is not None:
                au = np.full((len(members), n, out.au.shape[1]), np.nan, np.float32) if au is None else au
                au[k, s:e] = out.au.float().sigmoid().cpu().numpy()
    return MemberPredictions(names=[m.name for m in members], logits=logits, labels=dataset.labels.numpy(),
                             videos=np.asarray(dataset.table.videos), va=va, au=au)


# --------------------------------------------------------------------------------------- combination
def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def combine(logits: np.ndarray, how: str = "soft", weights: np.ndarray | None = None) -> np.ndarray:
    """(K, N, C) member logits -> (N, C) ensemble scores (argmax = the ensemble's class).

    soft:      mean of the members' softmax probabilities (papers A and E: "soft voting");
    logit_sum: sum of the raw logits (paper A's published code);
    weighted:  probabilities averaged with `weights` (K,), e.g. from `fit_weights` on held-out videos.
    """
    if how not in COMBINERS:
        raise ValueError(f"unknown combiner {how!r}; choose one of {COMBINERS}")
    if how == "logit_sum":
        return logits.sum(0)
    probs = softmax(logits)
    if how == "soft":
        return probs.mean(0)
    if weights is None or len(weights) != len(logits):
        raise ValueError(f"weighted voting needs one weight per member ({len(logits)}); got {weights}")
    return np.tensordot(np.asarray(weights, np.float64), probs, axes=1)


def fit_weights(logits: np.ndarray, labels: np.ndarray, steps: int = 200) -> np.ndarray:
    """Member weights on the simplex that maximise the likelihood of the weighted probability mean on
    these frames (a stacking of the members). Fit them on frames the reported score does not use."""
    probs = torch.as_tensor(softmax(logits), dtype=torch.float64)              # (K, N, C)
    keep = labels >= 0
    p_true = probs[:, torch.as_tensor(keep)].gather(2, torch.as_tensor(labels[keep])[None, :, None]
                                                    .expand(len(probs), -1, 1)).squeeze(2)   # (K, n)
    w = torch.zeros(len(probs), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        loss = -torch.log((w.softmax(0)[:, None] * p_true).sum(0) + 1e-12).mean()
        loss.backward()
        return loss
    opt.step(nll)
    return w.detach().softmax(0).numpy()


def video_folds(videos: np.ndarray, folds: int = 2, seed: int = 0) -> np.ndarray:
    """A fold number per frame, whole videos to a fold, videos shuffled by `seed`."""
    uniq = np.unique(videos)
    if len(uniq) < folds:
        raise ValueError(f"{folds} folds need at least {folds} videos; got {len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = dict(zip(uniq[order], np.arange(len(uniq)) % folds))
    return np.array([fold_of[v] for v in videos])


def crossfit_weighted(logits: np.ndarray, labels: np.ndarray, videos: np.ndarray, folds: int = 2,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Weighted voting scored honestly on the validation split: each fold of videos is combined with
    weights fitted on the other folds' frames, never its own. Returns the (N, C) scores and the
    (folds, K) weights."""
    fold = video_folds(videos, folds, seed)
    scores = np.zeros(logits.shape[1:], np.float64)
    weights = []
    for f in range(folds):
        w = fit_weights(logits[:, fold != f], labels[fold != f])
        scores[fold == f] = combine(logits[:, fold == f], "weighted", w)
        weights.append(w)
    return scores, np.stack(weights)


def majority_vote(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, N, C) member logits -> hard voting: (N,) classes, each member casting one vote for its argmax,
    and (N,) whether the top count was tied (a tie goes to the tied class with the highest mean
    probability). Unlike soft voting, a vote forgets how sure each member was."""
    votes = np.eye(logits.shape[-1])[logits.argmax(-1)].sum(0)                 # (N, C) votes per class
    top = votes == votes.max(1, keepdims=True)
    return np.where(top, softmax(logits).mean(0), -np.inf).argmax(1), top.sum(1) > 1


def first_k_scores(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    """Soft voting's score over the first k members, k = 1..K (members in training order, not best
    first): how an ensemble grows as members are added."""
    score = score_fn(num_classes)
    return [score(labels, combine(logits[:k], "soft").argmax(1)) for k in range(1, len(logits) + 1)]


def combine_va(va: np.ndarray) -> np.ndarray:
    """Multi-task members: valence-arousal by the mean of the members (K, N, 2) -> (N, 2)."""
    return np.nanmean(va, axis=0)


def combine_au(au_prob: np.ndarray) -> np.ndarray:
    """Multi-task members: each AU by the mean of the members' probabilities (K, N, 12) -> (N, 12)."""
    return np.nanmean(au_prob, axis=0)


def pairwise_disagreement(preds: np.ndarray) -> np.ndarray:
    """(K, N) predicted classes -> (K, K) share of frames on which two members disagree: the diversity
    an ensemble needs (identical members gain nothing from voting)."""
    return (preds[:, None, :] != preds[None, :, :]).mean(-1)


# ------------------------------------------------------------------------------------------ reporting
def score_fn(num_classes: int):
    """The run's selection metric on predicted classes: P_EXPR (mean F1 over 8), ABAW2020 for 7 classes
    (paper C), LSD mean F1 for 6 (paper E)."""
    if num_classes == 7:
        return lambda y, p: 0.67 * metrics.mean_f1_fast(y, p, 7) + 0.33 * float(np.mean(y == p))
    return lambda y, p: metrics.mean_f1_fast(y, p, num_classes)


def interval_table(rows: dict, videos: np.ndarray, n_boot: int = 1000, seed: int = 0, kinds: dict | None = None):
    """A score per row with its 95% bootstrap interval over videos. `rows` maps a name to a function of
    frame indices (all frames for the point estimate, resampled videos for the interval)."""
    import pandas as pd

    everything = np.arange(len(videos))
    out = []
    for name, fn in rows.items():
        lo, hi = metrics.video_bootstrap(fn, videos, n_boot=n_boot, seed=seed)
        out.append({"model": name, "kind": (kinds or {}).get(name, "ensemble"), "score": fn(everything),
                    "low": lo, "high": hi})
    return pd.DataFrame(out)


def predicted(labels: np.ndarray, pred: np.ndarray, score):
    """A row function scoring fixed predictions on the chosen frames."""
    return lambda i: score(labels[i], pred[i])


def mean_member(labels: np.ndarray, member_preds: np.ndarray, score):
    """A row function: the members' mean score on the chosen frames."""
    return lambda i: float(np.mean([score(labels[i], p[i]) for p in member_preds]))


def _weighted(pred: MemberPredictions, idx, select: MemberPredictions | None, seed: int) -> tuple[str, np.ndarray]:
    """Weighted voting's predicted classes: weights fitted on `select` (validation) when given, else
    cross-fitted over folds of this split's videos."""
    if select is not None:
        w = fit_weights(select.logits[idx], select.labels)
        return "weighted (fitted on validation)", combine(pred.logits[idx], "weighted", w).argmax(1)
    return "weighted (fitted on other videos)", crossfit_weighted(pred.logits[idx], pred.labels, pred.videos,
                                                                  seed=seed)[0].argmax(1)


def ensemble_table(pred: MemberPredictions, num_classes: int, n_boot: int = 1000, seed: int = 0,
                   weighted: bool = True, select: MemberPredictions | None = None):
    """Members against their ensembles on one split: every member, the mean member, and the three
    combiners, each with a bootstrap interval over videos. Returns (DataFrame, predicted classes by row);
    `attrs["best_member"]` names the member with the highest score on `select` (the same members'
    predictions on validation, so the choice is not made on the reported frames), else on `pred`."""
    score = score_fn(num_classes)
    y, videos = pred.labels, pred.videos
    preds = dict(zip(pred.names, pred.member_preds))
    chooser = select if select is not None else pred
    member_scores = {name: score(chooser.labels, p) for name, p in zip(chooser.names, chooser.member_preds)}
    preds["soft voting"] = combine(pred.logits, "soft").argmax(1)
    preds["logit sum (paper A's code)"] = combine(pred.logits, "logit_sum").argmax(1)
    if weighted and len(pred.names) > 1:
        name, classes = _weighted(pred, list(range(len(pred.names))), select, seed)
        preds[name] = classes
    rows = {name: predicted(y, p, score) for name, p in preds.items()}
    rows["mean member"] = mean_member(y, pred.member_preds, score)
    kinds = {name: "member" for name in [*member_scores, "mean member"]}
    table = interval_table(rows, videos, n_boot, seed, kinds)
    table.attrs.update(best_member=max(member_scores, key=member_scores.get))
    return table, preds


def paper_a_table(pred: MemberPredictions, groups: dict[str, list[Member]], num_classes: int, how: str = "soft",
                  n_boot: int = 1000, seed: int = 0, select: MemberPredictions | None = None):
    """Paper A Table 3's rows on one split: each single model, the weak ensemble's best and mean member and
    the weak ensemble itself, and the "DAN Ensemble" of every model, all with bootstrap intervals over
    videos. `pred` holds every member of `groups`, in order (one `predict_members` pass); the best member
    is chosen on `select` (the same members on validation) when given, else on `pred` itself."""
    score = score_fn(num_classes)
    chooser = select if select is not None else pred
    y, videos = pred.labels, pred.videos
    at = {name: i for i, name in enumerate(pred.names)}
    rows, kinds = {}, {}
    for group, members in groups.items():
        idx = [at[m.name] for m in members]
        if len(idx) == 1:
            rows[group] = predicted(y, pred.member_preds[idx[0]], score)
            kinds[group] = "single model"
            continue
        member_scores = [score(chooser.labels, chooser.member_preds[i]) for i in idx]
        best = idx[int(np.argmax(member_scores))]
        rows[f"{group}: best member ({pred.names[best]})"] = predicted(y, pred.member_preds[best], score)
        rows[f"{group}: mean member"] = mean_member(y, pred.member_preds[idx], score)
        kinds.update({k: "member" for k in list(rows)[-2:]})
        rows[f"{group} ({how})"] = predicted(y, combine(pred.logits[idx], how).argmax(1), score)
    if len(groups) > 1:
        rows[f"DAN Ensemble: all {len(pred.names)} models ({how})"] = predicted(y, combine(pred.logits, how).argmax(1), score)
    return interval_table(rows, videos, n_boot, seed, kinds)


def combiner_table(pred: MemberPredictions, groups: dict[str, list[Member]], num_classes: int,
                   n_boot: int = 1000, seed: int = 0, select: MemberPredictions | None = None):
    """Soft voting, logit sum and weighted voting (fitted on `select`, else cross-fitted over this
    split's videos) for every group of more than one model and for all models together, each with its
    bootstrap interval."""
    score = score_fn(num_classes)
    y, videos = pred.labels, pred.videos
    at = {name: i for i, name in enumerate(pred.names)}
    sets = {g: [at[m.name] for m in ms] for g, ms in groups.items() if len(ms) > 1}
    if len(groups) > 1:
        sets["DAN Ensemble (all)"] = list(range(len(pred.names)))
    rows = {}
    for name, idx in sets.items():
        logits = pred.logits[idx]
        rows[f"{name}: soft voting"] = predicted(y, combine(logits, "soft").argmax(1), score)
        rows[f"{name}: logit sum (paper A's code)"] = predicted(y, combine(logits, "logit_sum").argmax(1), score)
        label, weighted = _weighted(pred, idx, select, seed)
        rows[f"{name}: {label}"] = predicted(y, weighted, score)
    return interval_table(rows, videos, n_boot, seed)


def subset_study(pred: MemberPredictions, num_classes: int):
    """Every subset of >= 2 members: its mean pairwise disagreement and what soft voting gains over its
    mean member and over its best member, on the same frames (does diversity buy accuracy?)."""
    import itertools

    import pandas as pd

    score = score_fn(num_classes)
    y = pred.labels
    single = [score(y, p) for p in pred.member_preds]
    dis = pairwise_disagreement(pred.member_preds)
    rows = []
    for size in range(2, len(pred.names) + 1):
        for combo in itertools.combinations(range(len(pred.names)), size):
            idx = list(combo)
            voted = score(y, combine(pred.logits[idx], "soft").argmax(1))
            pairs = [dis[i, j] for i, j in itertools.combinations(idx, 2)]
            rows.append({"members": ",".join(pred.names[i] for i in idx), "size": size,
                         "disagreement": float(np.mean(pairs)), "ensemble": voted,
                         "gain_over_mean": voted - float(np.mean([single[i] for i in idx])),
                         "gain_over_best": voted - max(single[i] for i in idx)})
    return pd.DataFrame(rows)


def gain_over(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, videos: np.ndarray, num_classes: int,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """`paired_gain` of two models' predicted classes."""
    score = score_fn(num_classes)
    return paired_gain(predicted(labels, pred_a, score), predicted(labels, pred_b, score), videos, n_boot, seed)


# ----------------------------------------------------------------------------------------------- CLI
def run(cfg: EnsembleConfig) -> dict:
    """Train the members, predict validation in one pass, and report members vs ensembles."""
    data = load_expr_data(cfg)
    results = train_members(cfg, data)
    members = [Member(name=f"member_{i}", model=r.model, config=member_config(cfg, i)) for i, r in enumerate(results)]
    device = results[0].model.parameters().__next__().device
    pred = predict_members(members, data.held_out, device=device)     # reported: test (validation on Aff-Wild2)
    select = predict_members(members, data.val, device=device) if data.test is not None else None
    table, preds = ensemble_table(pred, len(data.classes), seed=cfg.seed, select=select)
    gain = gain_over(preds["soft voting"], preds[table.attrs["best_member"]], pred.labels, pred.videos,
                     len(data.classes), seed=cfg.seed)
    summary = {"protocol": data.protocol, "table": table.to_dict(orient="records"), "best_member": table.attrs["best_member"],
               "soft_vs_best": gain,
               "disagreement": pairwise_disagreement(pred.member_preds).tolist(), "config": cfg.to_dict()}
    out = output_dir() / cfg.out_dir
    record(out / "ensemble.json", **summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = config_parser(EnsembleConfig, "python -m fer_kit.ensemble",
                           "Train K members on seeded subsets of the training videos and compare them with their ensembles.")
    cfg = EnsembleConfig.from_params(vars(parser.parse_args(argv)))
    summary = run(cfg)
    print(pd_table(summary["table"]))
    print(gain_sentence(summary["soft_vs_best"], "soft voting", f"the best member ({summary['best_member']})"))
    print(f"summary in {shown(output_dir() / cfg.out_dir / 'ensemble.json')}")
    return summary


def pd_table(records: list[dict]) -> str:
    import pandas as pd

    return pd.DataFrame(records).round(3).to_string(index=False)


if __name__ == "__main__":
    main()
