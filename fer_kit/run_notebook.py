"""Execute a kit notebook headlessly and keep readable outputs.

    python -m fer_kit.run_notebook 04_train_dan                 # refresh the committed outputs
    python -m fer_kit.run_notebook 04_train_dan -o out.ipynb -p epochs 8

Papermill stores every refresh of a progress bar as its own output, so a saved notebook shows dozens of
half-drawn bars; `tidy` merges each cell's consecutive stream outputs and applies the carriage returns,
leaving what a Jupyter user sees at the end: one finished bar per loop; `drop_finished_bars` then removes
those too from the saved copy, whose epoch lines already report each loop.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from .paths import project_dir


def notebook_path(name: str) -> Path:
    """`04`, `04_train_dan` or a path -> the notebook file."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path
    hits = sorted((project_dir() / "notebooks").glob(f"{path.stem}*.ipynb"))
    if len(hits) != 1:
        found = ", ".join(h.name for h in hits) or "none"
        raise FileNotFoundError(f"notebook {name!r} names {len(hits)} notebooks in notebooks/ ({found}); "
                                "give its number and name, e.g. 04_train_dan")
    return hits[0]


def tidy(path: str | Path) -> None:
    """Coalesce each cell's stream outputs and apply carriage returns (nbconvert's own preprocessor), and
    drop papermill's record of this machine's paths, which readers of the saved notebook would see."""
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    nb = nbformat.read(path, as_version=4)
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    for key in ("input_path", "output_path"):
        nb.metadata.get("papermill", {}).pop(key, None)
    nbformat.write(nb, path)


_BAR = re.compile(r"^.*\|[^|]*\| *\d+/\d+ \[[^\]]*\]\s*$")


def drop_finished_bars(path: str | Path) -> None:
    """Remove finished progress bars from stderr: the epoch lines on stdout already say what happened,
    and a bar per epoch per run is noise to a reader of the saved notebook."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                out.text = "".join(line for line in out.text.splitlines(keepends=True)
                                   if not _BAR.match(line) and line.strip())
                if not out.text:
                    continue
            kept.append(out)
        if "outputs" in cell:
            cell.outputs = kept
    nbformat.write(nb, path)


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def kernel_env(env: dict[str, str] | None = None):
    """Environment for a kernel started inside the block (kernels inherit it), restored afterwards.

    MPLBACKEND=agg, set by CI and by headless shells, would leave a notebook without a single figure
    (and nbval would see fewer outputs than the committed run): kernels get matplotlib's inline backend."""
    env = {"MPLBACKEND": INLINE_BACKEND, **(env or {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(name: str, output: str | Path | None = None, parameters: dict | None = None,
            env: dict[str, str] | None = None) -> tuple[Path, float]:
    """Run a notebook with papermill from notebooks/ (as Jupyter would open it) and tidy its outputs;
    returns the executed notebook's path and the wall time in seconds. `env` is set for the kernel."""
    import papermill

    source = notebook_path(name)
    output = Path(output) if output is not None else source
    # executed into a scratch file first (outside notebooks/, where test collectors look): a failed run
    # must not leave its error cell in the notebook
    scratch = Path(tempfile.mkdtemp(prefix="fer_kit_run_")) / output.name
    t0 = time.perf_counter()
    try:
        with kernel_env(env):
            papermill.execute_notebook(str(source), str(scratch), parameters=parameters or {}, kernel_name="python3",
                                       cwd=str(source.parent), progress_bar=False)
    except Exception as err:
        failed = output.with_name(f"{output.stem}.failed.ipynb")
        if scratch.exists():
            shutil.move(scratch, failed)
        raise RuntimeError(f"{source.name} failed; the executed notebook with its error is {failed}") from err
    seconds = time.perf_counter() - t0
    tidy(scratch)
    drop_finished_bars(scratch)
    tidy(scratch)              # the dropped bars had split the epoch lines into one output each
    shutil.move(scratch, output)
    shutil.rmtree(scratch.parent, ignore_errors=True)
    return output, seconds


_TOOK = re.compile(r"its default run took \d+\.\d min")


def record_time(path: str | Path) -> float:
    """Write the saved run's duration (papermill's record) into the objectives cell's "its default run
    took N min", so the time a teacher plans with is the one the saved outputs took. Returns minutes."""
    nb = nbformat.read(path, as_version=4)
    minutes = nb.metadata["papermill"]["duration"] / 60
    for cell in nb.cells:
        if cell.cell_type == "markdown" and _TOOK.search(cell.source):
            cell.source = _TOOK.sub(f"its default run took {minutes:.1f} min", cell.source)
            nbformat.write(nb, path)
            break
    return minutes


def parse_value(text: str):
    """A -p value as papermill's CLI reads it: a Python literal when it is one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parameter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a notebook parameter, as papermill's -p")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fer_kit.run_notebook", description=__doc__.splitlines()[0])
    p.add_argument("notebook", help="number and name (04_train_dan) or path")
    p.add_argument("-o", "--output", default=None, help="where to save it (default: over the notebook itself)")
    parameter_args(p)
    args = p.parse_args(argv)
    out, seconds = execute(args.notebook, args.output, {k: parse_value(v) for k, v in args.parameter})
    if out == notebook_path(args.notebook) and not args.parameter:       # the committed default run
        record_time(out)
    print(f"{out.name}: executed in {seconds:.0f} s")


if __name__ == "__main__":
    main()
