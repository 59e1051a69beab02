"""A short model card in every run folder (MODEL_CARD.md): what the model was trained on, how well it
does per class, and what it must not be used for, next to the weights a student might pass on."""
from __future__ import annotations

from pathlib import Path

from .config import score_name

# what facial expression recognition can and cannot infer; README's "Responsible use" says it at length
LIMITS = """\
## What it must not be used for

- **Inferring what someone feels.** The model maps a face's configuration of muscles to a label that
  annotators gave similar faces. A smile is not happiness: expressions are posed, masked, social and
  culturally shaped, and the same feeling shows differently on different faces.
- **Decisions about people**: hiring, grading, exam proctoring, policing, credit, insurance, health.
  The EU AI Act (Regulation (EU) 2024/1689, Article 5(1)(f)) prohibits AI systems that infer emotions of
  people in workplaces and education institutions, except for medical or safety reasons, and classes
  most other emotion recognition as high-risk.
- **Anyone the training data does not represent.** Scores are measured on the data below only; on other
  ages, skin tones, cultures, cameras or lighting they may be far lower, and unevenly so between groups.
- **Anything real when trained on the kit's synthetic faces**: they exist to teach and test the
  pipeline, and a model trained on them has never seen a human face.
"""


def model_card(summary: dict) -> str:
    """Markdown for a run's metrics.json summary (train.fit's)."""
    cfg, data = summary["config"], summary["data"]
    report = summary.get("test") or summary["best"]
    where = "test split" if summary.get("test") else "validation split (no test labels)"
    lines = [f"# Model card: {cfg['model']} ({cfg['task']})", "",
             "Written by fer_kit at the end of training, from this folder's metrics.json.", "",
             "## Data", "",
             f"- Source: {data['source']} (`dataset={cfg['dataset']}`, `data_root={cfg['data_root']}`)",
             f"- Frames: {data['train_frames']} training, {data['val_frames']} validation, {data['test_frames']} test",
             f"- {data['train_report']}",
             f"- Protocol: {summary['protocol']}", "",
             "## Results", "",
             f"Chosen epoch {summary['best_epoch']}; scores on the {where}."]
    score = f"- {score_name(cfg['model'], cfg['task'], cfg['num_classes'])}: {report['score']:.3f}"
    if report.get("interval"):
        lo, hi = report["interval"]
        score += f" (95% bootstrap interval over videos [{lo:.3f}, {hi:.3f}])"
    lines += ["", score]
    per_class = report.get("per_class_f1")
    if per_class:
        support = report.get("support") or {}
        lines += ["", "| class | F1 | frames |", "|---|---|---|"]
        lines += [f"| {name} | {f1:.3f} | {support.get(name, '-')} |" for name, f1 in per_class.items()]
        weakest = min(per_class, key=per_class.get)
        lines += ["", f"Weakest class: {weakest} (F1 {per_class[weakest]:.3f}). Per-class F1 on a small split moves "
                  "a lot between seeds; read it with the interval above."]
    return "\n".join(lines) + "\n\n" + LIMITS


def write_model_card(summary: dict, out_dir: str | Path) -> Path:
    path = Path(out_dir) / "MODEL_CARD.md"
    path.write_text(model_card(summary))
    return path
