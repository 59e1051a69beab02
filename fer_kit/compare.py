"""Comparisons that can be believed: epochs chosen on validation, both arms scored on the same test
frames, a bootstrap interval over videos beside every number, a paired interval for the gap, and the
sentence the run's own numbers write about it.

A notebook records its comparison with `save`; `python -m fer_kit.study` reruns the notebook over
seeds and reads the records back, so one seed's luck is never the lesson.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .paths import output_dir

def paired(labels, pred_a, pred_b, videos, num_classes: int, names: tuple[str, str] = ("a", "b"),
           score: str = "p_expr", mask=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Two models' predictions on the same frames: each score with its interval over videos, and a's
    gain over b with a paired interval (both arms resampled with the same videos).

    `mask` narrows the comparison to some frames (e.g. those whose expression is hidden), keeping
    whole videos as the resampling unit. Returns a JSON-ready dict with the run's own sentence."""
    labels, pred_a, pred_b, videos = (np.asarray(x) for x in (labels, pred_a, pred_b, videos))
    if not len(labels) == len(pred_a) == len(pred_b) == len(videos):
        raise ValueError(f"labels, both predictions and videos must cover the same frames; got lengths "
                         f"{len(labels)}, {len(pred_a)}, {len(pred_b)}, {len(videos)}")
    if mask is not None:
        mask = np.asarray(mask, bool)
        labels, pred_a, pred_b, videos = labels[mask], pred_a[mask], pred_b[mask], videos[mask]
    row_a = metrics.frame_score_fn(labels, pred_a, score, num_classes)
    row_b = metrics.frame_score_fn(labels, pred_b, score, num_classes)
    every = np.arange(len(labels))
    out = {"score": score, "frames": int(len(labels)), "videos": int(len(np.unique(videos))), "names": list(names)}
    for name, row in zip(names, (row_a, row_b)):
        lo, hi = metrics.video_bootstrap(row, videos, n_boot=n_boot, seed=seed)
        out[name] = {"value": row(every), "low": lo, "high": hi}
    gain = metrics.paired_gain(row_a, row_b, videos, n_boot=n_boot, seed=seed)
    out["gain"] = {k: gain[k] for k in ("gain", "low", "high", "verdict")}
    out["sentence"] = sentence(out)
    return out


def sentence(comparison: dict, where: str = "") -> str:
    """What a comparison says, in words computed from its numbers."""
    a, b = comparison["names"]
    g, s = comparison["gain"], comparison["score"]
    va, vb = comparison[a], comparison[b]
    where = where or comparison.get("where", "")
    numbers = (f"{a} {va['value']:.3f} [{va['low']:.3f}, {va['high']:.3f}] vs {b} {vb['value']:.3f} "
               f"[{vb['low']:.3f}, {vb['high']:.3f}] ({s}{', ' + where if where else ''}; "
               f"{comparison['frames']:,} frames of {comparison['videos']} videos)")
    verdict = {"better": f"{a} beat {b} by {g['gain']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]: beyond the noise of this split",
               "worse": f"{a} lost to {b} by {g['gain']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]: beyond the noise of this split",
               "within the noise": f"{a} did not beat {b} beyond the noise: the gain {g['gain']:+.3f} has the interval "
                                   f"[{g['low']:+.3f}, {g['high']:+.3f}], which holds 0"}[g["verdict"]]
    return f"{numbers}. {verdict}."


def score_table(runs: dict, metric: str = "score") -> pd.DataFrame:
    """One row per run: the epoch chosen on validation, its validation score, its test score with the
    interval over videos, and the last epoch's test score (what choosing on validation bought).
    Runs without test labels (real Aff-Wild2) show their validation score, labelled as such."""
    rows = []
    for name, run in runs.items():
        row = {"run": name, "chosen epoch": run.best["epoch"], "last epoch": int(run.history["epoch"].iloc[-1]),
               f"validation {metric} (chosen)": run.best[metric]}
        if run.test is not None:
            # the interval is the run's score's (its selection metric); other metrics get none here
            lo, hi = run.test["interval"] if run.test[metric] == run.test["score"] else (np.nan, np.nan)
            row.update({f"test {metric} (chosen)": run.test[metric], "95% interval": f"[{lo:.3f}, {hi:.3f}]",
                        f"test {metric} (last epoch)": run.test_final[metric]})
        rows.append(row)
    return pd.DataFrame(rows).set_index("run").round(3)


def unpaired_sentence(a: str, report_a: dict, b: str, report_b: dict, metric: str = "score") -> str:
    """One model scored on two different sets of frames (other people, another rendering), each report
    with its "interval" over videos (train.evaluate(..., interval=True)): no paired interval exists, so
    the verdict is whether the two intervals overlap, a cautious one (overlapping intervals may still
    hide a real gap)."""
    (va, (la, ha)), (vb, (lb, hb)) = ((r[metric], r["interval"]) for r in (report_a, report_b))
    reading = ("the intervals overlap: this run cannot tell the two apart" if la <= hb and lb <= ha else
               f"the intervals do not overlap: {a} is {'higher' if va > vb else 'lower'} beyond the noise")
    return f"{a} {va:.3f} [{la:.3f}, {ha:.3f}] vs {b} {vb:.3f} [{lb:.3f}, {hb:.3f}], a difference of {va - vb:+.3f}; {reading}"


def comparison_dir() -> Path:
    return output_dir() / "runs" / "comparisons"


def save(comparison: dict, name: str, **context) -> Path:
    """Record a notebook's comparison (under output_dir()/runs/comparisons/) for `fer_kit.study` to collect."""
    path = comparison_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**comparison, **context}, indent=1))
    tmp.replace(path)
    return path


def load_all(folder: str | Path | None = None) -> dict[str, dict]:
    folder = Path(folder) if folder is not None else comparison_dir()
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def drop_under(labels, preds: dict, videos, condition, num_classes: int, score: str = "abaw2020",
               what: str = "affected", n_boot: int = 1000, seed: int = 0) -> dict:
    """Which of two models a condition (e.g. a covered face region) hurts more: each model's score on the
    frames without it minus on those with it, and the first model's drop minus the second's with a paired
    interval over videos. Only videos showing both kinds of frames count, so every resample scores both."""
    labels, videos, condition = np.asarray(labels), np.asarray(videos), np.asarray(condition, bool)
    _, video = np.unique(videos, return_inverse=True)
    hit, frames = np.bincount(video, weights=condition), np.bincount(video)
    both = (hit[video] > 0) & (hit[video] < frames[video])              # the video has frames of both kinds
    labels, videos, condition = labels[both], videos[both], condition[both]

    def drop_of(pred):
        row = metrics.frame_score_fn(labels, np.asarray(pred)[both], score, num_classes)
        return lambda i: row(i[~condition[i]]) - row(i[condition[i]])

    drops = {name: drop_of(pred) for name, pred in preds.items()}
    (a, drop_a), (b, drop_b) = drops.items()
    gap = metrics.paired_gain(drop_a, drop_b, videos, n_boot=n_boot, seed=seed)
    every = np.arange(len(labels))
    out = {"score": score, "frames": int(len(labels)), "videos": int(len(np.unique(videos))),
           "drop": {a: drop_a(every), b: drop_b(every)}, "gap": gap}
    reading = {"better": f"{a} loses more than {b}, beyond the noise",
               "worse": f"{a} loses less than {b}, beyond the noise",
               "within the noise": "this split cannot tell which of the two loses more"}[gap["verdict"]]
    out["sentence"] = (f"from clean to {what} frames {score} drops by {out['drop'][a]:+.3f} for {a} and by "
                       f"{out['drop'][b]:+.3f} for {b} (a negative drop is a rise; {out['videos']} videos show both); "
                       f"{a}'s drop minus {b}'s is {gap['gain']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}] "
                       f"(paired bootstrap over videos): {reading}")
    return out
