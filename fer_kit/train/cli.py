"""The command line: every config field is a flag, so a notebook's parameters and the CLI's are one list.
    python -m fer_kit.train --epochs 8 --batch_size 64            # writes runs/dan_expr/
    python -m fer_kit.train --epochs 12 --exist resume            # continues it from last.pt
    torchrun --standalone --nproc_per_node 2 -m fer_kit.train ...   # one run over 2 processes (distributed.py)
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import fields

from ..config import TrainConfig, score_name
from ..paths import shown
from . import distributed
from .loop import fit
from .run_folder import RunResult


def config_parser(cls=TrainConfig, prog: str = "python -m fer_kit.train",
                  description: str = "One training loop for the kit: config -> data -> model -> loss -> fit -> "
                                     "metrics -> run folder.") -> argparse.ArgumentParser:
    """CLI flags are a config dataclass's fields, so the notebook and the command line speak one language."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                allow_abbrev=False)   # `--epoch 8` must fail, not mean --epochs
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kinds = [t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None)]
        p.add_argument(f"--{f.name}", type=_parse_as(kinds[0]), default=f.default, metavar=kinds[0].__name__.upper())
    return p


def _parser() -> argparse.ArgumentParser:
    """The CLI differs from a notebook in two defaults: an existing run folder is an error (a notebook
    re-run overwrites its own run), and the folder is named after the model and task, so the README's
    commands for different papers never share one."""
    p = config_parser()
    p.add_argument("--resume", action="store_true", help="the same as --exist resume")
    p.set_defaults(exist="error", out_dir=None)
    return p


def default_out_dir(cfg_args: dict) -> str:
    """runs/<model>_<task> (plus the variant for paper B's models), e.g. runs/dan_expr, runs/ddamfn_mtl."""
    model, task = cfg_args.get("model") or TrainConfig.model, cfg_args.get("task") or TrainConfig.task
    variant = f"_{cfg_args.get('variant') or TrainConfig.variant}" if model.startswith("regnet_transformer") else ""
    return f"runs/{model}_{task}{variant}"


def _parse_as(kind: type):
    def parse(text: str):
        if text == "None":
            return None
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
            return text.lower() in ("true", "1")
        return kind(text)
    parse.__name__ = kind.__name__
    return parse


def main(argv: list[str] | None = None) -> RunResult:
    args = vars(_parser().parse_args(argv))
    if args.pop("resume"):
        args["exist"] = "resume"
    args["out_dir"] = args["out_dir"] or default_out_dir(args)
    cfg = TrainConfig.from_params(args)
    try:
        result = fit(cfg)
    finally:
        main_rank = distributed.ranks().main
        distributed.cleanup()
    if not main_rank:
        return result
    score = score_name(cfg.model, cfg.task, cfg.num_classes)
    print(f"best validation {score} {result.best['score']:.4f} at epoch {result.best['epoch']}; "
          f"metrics in {shown(result.metrics_path)}")
    if result.test is not None:
        lo, hi = result.test["interval"]
        print(f"test {score} {result.test['score']:.4f} [{lo:.4f}, {hi:.4f}] at the chosen epoch, "
              f"{result.test_final['score']:.4f} at the last ({result.protocol})")
    else:
        print(f"no test labels: {result.protocol}")
    return result
