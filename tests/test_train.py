import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from fer_kit import train
from fer_kit.train import cli
from fer_kit.config import TrainConfig


def tiny_config(tmp_path, **kw):
    base = dict(n_frames=600, seed=3, image_size=48, batch_size=16, epochs=1, max_batches=4, progress=False,
                out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_data(tiny_synthetic):
    return train.load_expr_data(TrainConfig(n_frames=600, seed=3, image_size=48, progress=False))


def test_fit_writes_a_complete_run_folder(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("FER_KIT_RUN_FIGURES", "1")       # off for the rest of the suite (conftest.py)
    result = train.fit(tiny_config(tmp_path, epochs=2), tiny_data)
    run = tmp_path / "run"
    for name in ("config.json", "history.csv", "metrics.json", "best.pt", "last.pt", "figures/learning_curves.png",
                 "figures/per_class_f1.png", "figures/confusion.png"):
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["config"]["epochs"] == 2 and len(result.history) == 2
    assert set(m["best"]["per_class_f1"]) == set(tiny_data.classes)
    assert sum(map(sum, m["best"]["confusion"])) == len(tiny_data.val)   # the whole split, not a batch
    state = train.load_checkpoint(run / "best.pt")                       # weights_only=True
    assert state["epoch"] == m["best_epoch"]
    # chosen on validation, reported on the test split (other videos), beside the last epoch's test score
    assert "test split" in m["protocol"] and m["data"]["test_frames"] == len(tiny_data.test)
    assert not set(tiny_data.test.table.videos) & set(tiny_data.val.table.videos)
    assert sum(map(sum, m["test"]["confusion"])) == len(tiny_data.test)
    lo, hi = m["test"]["interval"]
    assert lo <= m["test"]["score"] <= hi and lo < hi
    assert result.reported is result.test and m["test_final"]["n"] == len(tiny_data.test)
    chosen = train.evaluate(result.model, tiny_data.test, tiny_data.classes)   # the model returned is the chosen epoch's
    assert chosen["score"] == pytest.approx(m["test"]["score"])
    card = (run / "MODEL_CARD.md").read_text()          # data, per-class F1 on the test split, what not to do with it
    assert f"{m['data']['train_frames']} training" in card and "test split" in card
    assert all(f"| {name} | {f1:.3f} |" in card for name, f1 in m["test"]["per_class_f1"].items())
    assert "must not be used for" in card and "Article 5(1)(f)" in card


def test_seeded_runs_reproduce_metrics(tmp_path, tiny_data):
    a = train.fit(tiny_config(tmp_path / "a"), tiny_data)
    b = train.fit(tiny_config(tmp_path / "b"), tiny_data)
    assert a.best["p_expr"] == b.best["p_expr"]
    assert a.history["train_loss"].tolist() == b.history["train_loss"].tolist()


def test_resumed_run_matches_uninterrupted(tmp_path, tiny_data):
    straight = train.fit(tiny_config(tmp_path / "s", epochs=2), tiny_data)
    train.fit(tiny_config(tmp_path / "r", epochs=1), tiny_data)
    resumed = train.fit(tiny_config(tmp_path / "r", epochs=2), tiny_data, resume=True)
    assert resumed.history["train_loss"].tolist() == straight.history["train_loss"].tolist()
    assert resumed.best["p_expr"] == straight.best["p_expr"]


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails half-way (a full disk) must leave the previous checkpoint whole and no temporary."""
    from helpers import fail_saves_halfway

    path = tmp_path / "ck.pt"
    train.save_checkpoint({"w": torch.ones(2)}, path)
    fail_saves_halfway(monkeypatch)
    with pytest.raises(OSError, match="ck.pt .No space left on device.; the previous ck.pt, if any, is unchanged"):
        train.save_checkpoint({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]              # no temporary left behind
    assert torch.equal(train.load_checkpoint(path)["w"], torch.ones(2))   # the previous checkpoint, whole
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train.load_checkpoint(tmp_path / "nope.pt")


def test_cli_takes_the_notebook_parameter_names(tmp_path, tiny_data, capsys):
    args = ["--n_frames", "600", "--seed", "3", "--image_size", "48", "--batch_size", "16", "--epochs", "1",
            "--max_batches", "4", "--progress", "False", "--out_dir", str(tmp_path / "cli")]
    result = train.main(args)
    assert (tmp_path / "cli" / "metrics.json").exists() and "best validation P_EXPR" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(["--epoch", "8"])
    same = train.fit(tiny_config(tmp_path, out_dir=str(tmp_path / "nb")), tiny_data)
    assert same.best["p_expr"] == result.best["p_expr"]


def test_cli_defaults_never_overwrite_a_run(tmp_path):
    """The CLI refuses an existing run folder unless told (--exist resume|overwrite) and names its default
    folder after model and task, so the README's commands for papers A, B, D and E write four folders."""
    args = vars(cli._parser().parse_args([]))
    assert args["exist"] == "error" and args["out_dir"] is None and TrainConfig().exist == "overwrite"
    assert vars(cli._parser().parse_args(["--resume"]))["resume"]
    folders = [train.default_out_dir(a) for a in ({}, {"model": "regnet_transformer", "variant": "combine"},
                                                  {"model": "ddamfn", "task": "mtl"}, {"model": "dan_landmarks"})]
    assert folders == ["runs/dan_expr", "runs/regnet_transformer_expr_combine", "runs/ddamfn_mtl", "runs/dan_landmarks_expr"]


def test_bad_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train.load_expr_data(tiny_config(tmp_path, data_root=str(tmp_path / "missing")))


@pytest.fixture(scope="module")
def tiny_mtl(tiny_synthetic):
    """Multi-task splits, validation cut to 48 frames: DDAMFN is slow on a CPU."""
    from dataclasses import replace

    from fer_kit.data.dataset import FrameDataset

    data = train.load_expr_data(TrainConfig(n_frames=600, seed=3, model="ddamfn", task="mtl", preset="laptop_d",
                                            progress=False))
    val = FrameDataset(data.val.table.subset(range(48)), 64, data.val.transform, progress=False, targets="mtl")
    return replace(data, val=val)


def test_multitask_run_trains_every_head_and_scores_p(tmp_path, tiny_mtl):
    """Paper D's setting in the one loop: heads only for an epoch, then everything; P = CCC + F1 + AU F1."""
    x, y = tiny_mtl.train[0]
    assert set(y) == {"expr", "va", "au"} and y["va"].shape == (2,) and y["au"].shape == (12,)
    cfg = tiny_config(tmp_path, model="ddamfn", task="mtl", preset="laptop_d", image_size=None, batch_size=8,
                      epochs=2, freeze_epochs=1, max_batches=2)
    assert cfg.image_size == 64 and cfg.num_heads == 2
    result = train.fit(cfg, tiny_mtl)
    h = result.history
    assert h["stage"].tolist() == ["heads only", "all"]
    assert result.best["epoch"] == 2            # a fine-tuned run keeps a fine-tuned epoch, whatever epoch 1 scored
    assert {"val_p_mtl", "val_ccc_mean", "val_au_f1_mean", "train_va", "train_au", "train_attention"} <= set(h.columns)
    b = result.best
    assert b["p_mtl"] == pytest.approx(b["ccc_mean"] + b["p_expr"] + b["au_f1_mean"])
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"val_p_mtl", "val_ccc_mean", "val_p_expr", "val_au_f1_mean", "val_score"} <= set(m["final"])


def test_heads_only_stage_leaves_the_trunk_untouched(tmp_path, tiny_mtl):
    cfg = tiny_config(tmp_path, model="ddamfn", task="mtl", preset="laptop_d", image_size=None, batch_size=8,
                      epochs=1, freeze_epochs=1, max_batches=2)
    torch.manual_seed(cfg.seed)
    start = train.build_model(cfg)                                             # fit seeds the same way
    before = start.trunk.stem.conv.weight.detach().clone()
    stats = {k: v.clone() for k, v in start.trunk.state_dict().items() if "running_" in k}
    assert stats
    result = train.fit(cfg, tiny_mtl)
    assert torch.equal(result.model.trunk.stem.conv.weight, before)
    after = result.model.trunk.state_dict()
    moved = [k for k, v in stats.items() if not torch.equal(after[k], v)]
    assert not moved, f"BatchNorm statistics of the frozen trunk moved: {moved[:3]}"


def test_mtl_needs_a_multitask_model(tmp_path):
    with pytest.raises(ValueError, match="task='mtl' needs a model with VA, EXPR and AU heads"):
        tiny_config(tmp_path, task="mtl")


def test_cli_and_notebook_mean_the_same_multitask_run(tmp_path, tiny_synthetic, capsys):
    """Notebook 07's main run is `train.fit(MultitaskConfig(...).train_config())`; the CLI with the same
    names and values must reproduce its metrics exactly."""
    from fer_kit.config import MultitaskConfig

    values = dict(n_frames=600, seed=3, batch_size=8, epochs=2, freeze_epochs=1, max_batches=2, progress=False)
    nb = train.fit(MultitaskConfig(**values, out_dir=str(tmp_path / "nb")).train_config())
    argv = ["--model", "ddamfn", "--task", "mtl", "--preset", "laptop_d", "--weighted_sampling", "False",
            "--expr_label_fraction", "0.4"]      # notebook 07's data: expression labels on 40% of the videos
    for k, v in {**values, "out_dir": str(tmp_path / "cli")}.items():
        argv += [f"--{k}", str(v)]
    cli = train.main(argv)
    assert "best validation P " in capsys.readouterr().out
    assert cli.best["p_mtl"] == nb.best["p_mtl"] and cli.best["ccc_mean"] == nb.best["ccc_mean"]
    assert cli.history["train_loss"].tolist() == nb.history["train_loss"].tolist()


# a run small enough to kill five times: 3 epochs x 4 steps of timm's 0.4M-parameter test ResNet, with
# last.pt written after every step (checkpoint_minutes ~ 0)
def kill_config(tmp_path, name):
    return tiny_config(tmp_path, model="resnet_classifier", backbone="test_resnet", batch_size=8, epochs=3,
                       checkpoint_minutes=1e-9, exist="resume", out_dir=str(tmp_path / name))


# where each process is SIGKILLed (train.checkpoints._kill_due): after its n-th training step, or half-way through
# its n-th checkpoint write (the temporary file cut in half, the rename not done); drawn once with
# random.Random(16) from kinds x n in 2..3 (n >= 2 so every process gets past one checkpoint)
KILL_POINTS = ["save:2", "step:3", "save:3", "step:2", "save:3"]


def _run_files(run):
    metrics = json.loads((run / "metrics.json").read_text())
    history = (run / "history.csv").read_text().splitlines()
    seconds = history[0].split(",").index("seconds")
    history = [[v for i, v in enumerate(line.split(",")) if i != seconds] for line in history]
    return train.load_checkpoint(run / "last.pt")["model"], train.load_checkpoint(run / "best.pt")["model"], metrics, history


def _train_until_killed(cfg, data, point, stdout):
    """A forked training process (torch and the data already loaded: no 7 s import per start). One
    thread: GNU OpenMP's thread pool does not survive a fork, and a child using it hangs."""
    import contextlib

    torch.set_num_threads(1)
    os.environ["FER_KIT_TEST_KILL"] = point or ""
    with open(stdout, "w", buffering=1) as out, contextlib.redirect_stdout(out):   # lines survive the kill
        train.fit(cfg, data)


def test_a_run_killed_five_times_resumes_to_the_uninterrupted_result(tmp_path, tiny_data):
    import multiprocessing

    cfg = kill_config(tmp_path, "killed")
    resumed_at = []
    for k, point in enumerate([*KILL_POINTS, None]):
        log = tmp_path / f"stdout_{k}.txt"
        p = multiprocessing.get_context("fork").Process(target=_train_until_killed, args=(cfg, tiny_data, point, log))
        p.start()
        p.join(120)
        if p.exitcode is None:
            p.kill()
        resumed_at += [line for line in log.read_text().splitlines() if line.startswith("resumed from")]
        assert p.exitcode == (0 if point is None else -9), (point, p.exitcode)
        train.load_checkpoint(tmp_path / "killed" / "last.pt")      # every kill leaves a loadable checkpoint
    assert len(resumed_at) == len(KILL_POINTS) and any("step" in line for line in resumed_at), resumed_at
    assert not (tmp_path / "killed" / ".lock").exists()                # each killed run's lock was taken over
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                           # as the forked runs: the same sums
    try:
        train.fit(kill_config(tmp_path, "straight"), tiny_data)
    finally:
        torch.set_num_threads(threads)
    (w_killed, best_killed, m_killed, h_killed), (w, best, m, h) = (_run_files(tmp_path / n) for n in ("killed", "straight"))
    assert all(torch.equal(w_killed[k], w[k]) for k in w) and all(torch.equal(best_killed[k], best[k]) for k in best)
    assert h_killed == h
    assert (m_killed["best"], m_killed["final"]) == (m["best"], m["final"])
    print("kill points", KILL_POINTS, resumed_at, "final", m["final"], "best", m["best"]["p_expr"], m["best_epoch"])


def test_a_cpu_run_is_deterministic_and_gives_the_process_its_settings_back(tmp_path, tiny_data):
    """Deterministic kernels are the run's, not the notebook's: a user who turned cuDNN's autotuner on
    keeps it after fit() returns; deterministic=False runs without them."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    try:
        for deterministic, expected in ((None, True), (False, False)):
            result = train.fit(tiny_config(tmp_path, model="test_dan", max_batches=2, deterministic=deterministic,
                                           out_dir=str(tmp_path / f"run_{deterministic}")), tiny_data)
            assert json.loads(result.metrics_path.read_text())["deterministic"] is expected
            assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = False


# torchrun: 2 CPU processes (gloo) against 1 process with the same global batch and seed. Paper A's model
# with its learnable centres, BatchNorm over the global batch (sync_bn) and weighted sampling. SGD, two
# steps: Adam's first steps move each weight by about lr whatever the gradient's size, so weights whose
# gradient is zero up to rounding would move by +-lr in directions the summation order picks. (Two
# one-process runs with 1 and 2 threads differ by up to 3e-4 here, more than these two do.)
DDP_ARGS = ["--n_frames", "600", "--seed", "3", "--image_size", "48", "--batch_size", "16", "--epochs", "2",
            "--max_batches", "1", "--model", "test_dan", "--optimizer", "sgd", "--lr", "0.01", "--precision", "fp32",
            "--augment", "none", "--progress", "False"]


def _torchrun(out_dir, *extra):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fer_kit.train", *DDP_ARGS, *extra, "--out_dir", str(out_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_two_processes_train_the_one_process_run(tmp_path, tiny_synthetic):
    from fer_kit.train import main

    main([*DDP_ARGS, "--sync_bn", "True", "--out_dir", str(tmp_path / "one")])
    out = _torchrun(tmp_path / "two", "--sync_bn", "True")
    assert out.count("epoch 2:") == 1                         # rank 0 alone speaks
    one, two = (_run_files(tmp_path / n) for n in ("one", "two"))
    assert all(torch.allclose(one[0][k].double(), two[0][k].double(), rtol=1e-3, atol=1e-4) for k in one[0])
    m1, m2 = one[2], two[2]
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert m1["best"]["confusion"] == m2["best"]["confusion"] and m1["test"]["confusion"] == m2["test"]["confusion"]
    assert m1["best"]["p_expr"] == pytest.approx(m2["best"]["p_expr"])
    assert sum(map(sum, m2["best"]["confusion"])) == m2["data"]["val_frames"]   # gathered from both ranks, whole split
    # without sync_bn each rank normalises by its own half batch: a different model, and the test sees it
    _torchrun(tmp_path / "per_rank_bn")
    apart = _run_files(tmp_path / "per_rank_bn")[0]
    assert not all(torch.allclose(one[0][k].double(), apart[k].double(), rtol=1e-3, atol=1e-4) for k in one[0])


def test_each_rank_takes_its_share_of_every_global_batch():
    from torch.utils.data import RandomSampler

    from fer_kit.train.distributed import Ranks, RankSlice

    def order(seed):
        return RandomSampler(range(50), generator=torch.Generator().manual_seed(seed))
    one = list(order(0))[:48]                                 # 3 global batches of 16; the last 2 items dropped
    shares = [list(RankSlice(order(0), 16, Ranks(rank, 2))) for rank in (0, 1)]
    assert all(len(s) == len(RankSlice(order(0), 16, Ranks(0, 2))) == 24 for s in shares)
    for b in range(3):
        assert shares[0][8 * b:8 * b + 8] + shares[1][8 * b:8 * b + 8] == one[16 * b:16 * b + 16]


def test_a_multi_process_run_refuses_what_it_cannot_share():
    from fer_kit.train.distributed import Ranks

    with pytest.raises(ValueError, match="divide by 3"):
        train.check_distributed(TrainConfig(batch_size=16), Ranks(0, 3))
    with pytest.raises(ValueError, match="by the clock"):
        train.check_distributed(TrainConfig(minutes=1.0), Ranks(0, 2))


def test_a_compiled_run_trains_the_eager_run(tmp_path, tiny_data):
    """torch.compile (about 45 s of compiling on 2 cores) changes how the step runs, not what it computes;
    the run folder holds the model's own weights, loadable without compiling."""
    kw = dict(model="resnet_classifier", backbone="test_resnet", precision="fp32", epochs=2, max_batches=3,
              optimizer="sgd", lr=0.01)        # (Adam would amplify rounding; see DDP_ARGS)
    eager = train.fit(tiny_config(tmp_path / "eager", **kw), tiny_data)
    compiled = train.fit(tiny_config(tmp_path / "compiled", compile=True, **kw), tiny_data)
    assert compiled.history["train_loss"].tolist() == pytest.approx(eager.history["train_loss"].tolist(), rel=1e-4)
    a, b = (train.load_checkpoint(tmp_path / n / "run" / "last.pt")["model"] for n in ("eager", "compiled"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_a_finished_run_of_the_same_config_is_reused_not_retrained(tmp_path, tiny_data, monkeypatch, capsys):
    first = train.fit(tiny_config(tmp_path, epochs=2), tiny_data)
    before = (tmp_path / "run" / "best.pt").stat().st_mtime_ns
    again = train.fit(tiny_config(tmp_path, epochs=2, reuse=True, progress=True), tiny_data)   # progress: how, not what
    assert "loaded, not trained again" in capsys.readouterr().out
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns == before
    assert again.test == first.test and again.best["epoch"] == first.best["epoch"]
    assert again.history["train_loss"].tolist() == pytest.approx(first.history["train_loss"].tolist())
    assert train.evaluate(again.model, tiny_data.test, tiny_data.classes)["score"] == pytest.approx(first.test["score"])
    train.fit(tiny_config(tmp_path, epochs=2, lr=1e-4, reuse=True), tiny_data)     # another config: trained
    assert "loaded" not in capsys.readouterr().out
    monkeypatch.setenv("FER_KIT_WORKSHOP", "1")                                    # a workshop reuses by default ...
    train.fit(tiny_config(tmp_path, epochs=2, lr=1e-4), tiny_data)
    assert "loaded, not trained again" in capsys.readouterr().out
    train.fit(tiny_config(tmp_path, epochs=2, lr=1e-4, reuse=False), tiny_data)    # ... unless a student retrains
    assert "loaded" not in capsys.readouterr().out


def test_evaluation_normalises_whole_batches_on_the_device_as_each_face_would_be(tiny_data, monkeypatch):
    """The loader hands over uint8 frames and the evaluation transform runs once per batch, giving what the
    per-face transform gives; clips and LSD landmark targets too; a recipe with no batched version
    (paper_a) still runs per face."""
    from torchvision.transforms import v2

    from fer_kit.data.clips import ClipDataset
    from fer_kit.data.transforms import train_transform
    from fer_kit.train.evaluate import device_batches

    calls = []

    class Counted(v2.Compose):
        def forward(self, *inputs):
            calls.append(1)
            return super().forward(*inputs)

    val = tiny_data.val.subset(np.arange(40))
    per_face = torch.stack([val[i][0] for i in range(len(val))])
    val.transform = Counted(list(val.transform.transforms))
    batches = list(device_batches(val, 16, "cpu"))
    assert calls == [] and [len(x) for x, _ in batches] == [16, 16, 8]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x, per_face, atol=1e-5) and torch.equal(torch.cat([b[1] for b in batches]), val.labels)

    clips = ClipDataset(tiny_data.val.subset(np.arange(40)), 4)
    xc, yc = next(device_batches(clips, 3, "cpu"))
    assert xc.shape == (3, 4, 3, 48, 48) and torch.allclose(xc[1], clips[1][0], atol=1e-5) and torch.equal(yc[1], clips[1][1])

    points = np.random.default_rng(0).uniform(10, 90, (len(val), 68, 2)).astype(np.float32)
    lsd = train.frame_dataset(TrainConfig(n_frames=600, seed=3, image_size=48, progress=False),
                              dataclasses.replace(val.table, landmarks=points), tiny_data.val.transform, targets="landmarks")
    xl, yl = next(device_batches(lsd, 8, "cpu"))
    assert torch.allclose(xl[3], lsd[3][0], atol=1e-5) and torch.allclose(yl["landmarks"][3], lsd[3][1]["landmarks"])

    val.transform = train_transform("paper_a", 48)                 # picks among whole pipelines: per face only
    xa, _ = next(device_batches(val, 4, "cpu"))
    assert xa.dtype == torch.float32 and xa.shape == (4, 3, 48, 48)
