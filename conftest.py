"""Settings for every pytest run, the tests and nbval's re-executed notebooks alike (a conftest.py inside
tests/ would not reach notebooks/, so `pytest notebooks/01_dataset_statistics.ipynb` alone behaves the same)."""
import os
import shutil
import tempfile

# Tests never touch the user's cache, and plots never need a screen.
os.environ.setdefault("MPLBACKEND", "agg")
# Runs and figures of every test and of nbval's kernels (which inherit the environment) go to a scratch
# folder, never over the committed figures/.
os.environ["FER_KIT_OUTPUT"] = tempfile.mkdtemp(prefix="fer_kit_test_output_")
# A run folder's own three figures cost 1-3 s a run, and the suite trains about a hundred small runs:
# tests/test_train.py's run-folder test turns them back on and checks them.
os.environ["FER_KIT_RUN_FIGURES"] = "0"


def pytest_sessionfinish(session, exitstatus):
    """The scratch folder holds every notebook test's run folders (checkpoints included): a passed session
    deletes it, as pytest deletes its own tmp_path folders (pyproject: tmp_path_retention_policy); a failed
    one keeps it to look into."""
    output = os.environ["FER_KIT_OUTPUT"]
    if exitstatus == 0:
        shutil.rmtree(output, ignore_errors=True)
    else:
        print(f"\nfer_kit: the failed session's runs and figures are kept in {output}")


def pytest_collectstart(collector):
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        # nbval: progress bars and warnings go to stderr and differ run to run; never compare them
        collector.skip_compare += ("stderr",)
        # its kernel, started in setup(), draws figures as the committed run did (inline, not agg)
        start_kernel = collector.setup

        def setup():
            from fer_kit.run_notebook import kernel_env
            with kernel_env():
                start_kernel()
        collector.setup = setup

