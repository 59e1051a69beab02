import json

import pytest
import torch

from fer_kit import train
from fer_kit.config import TrainConfig


def tiny_config(tmp_path, **kw):
    base = dict(n_frames=600, seed=3, image_size=48, batch_size=16, epochs=1, max_batches=4, progress=False,
                out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_data(tiny_synthetic):
    return train.load_expr_data(TrainConfig(n_frames=600, seed=3, image_size=48, progress=False))


def test_fit_writes_a_complete_run_folder(tmp_path, tiny_data):
    result = train.fit(tiny_config(tmp_path, epochs=2), tiny_data)
    run = tmp_path / "run"
    for name in ("config.json", "history.csv", "metrics.json", "best.pt", "last.pt"):
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["config"]["epochs"] == 2 and len(result.history) == 2
    assert set(m["best"]["per_class_f1"]) == set(tiny_data.classes)
    assert sum(map(sum, m["best"]["confusion"])) == len(tiny_data.val)   # the whole split, not a batch
    state = train.load_checkpoint(run / "best.pt")                       # weights_only=True
    assert state["epoch"] == m["best_epoch"]


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


def test_checkpoints_are_written_atomically(tmp_path):
    path = tmp_path / "ck.pt"
    train.save_checkpoint({"w": torch.ones(2)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]              # no temporary left behind
    assert torch.equal(train.load_checkpoint(path)["w"], torch.ones(2))
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


def test_bad_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train.load_expr_data(tiny_config(tmp_path, data_root=str(tmp_path / "missing")))
