import json

import numpy as np
import pytest
from PIL import Image

from fer_kit import schedules, train
from fer_kit.train import cli
from fer_kit.config import TrainConfig, fitted_image_size, image_size_note, source_resolution
from fer_kit.schedules import FINAL, START, Clock, lr_factor


@pytest.fixture(scope="module")
def tiny_data(tiny_synthetic):
    return train.load_expr_data(TrainConfig(n_frames=600, seed=3, image_size=48, progress=False))


@pytest.mark.parametrize("kind", ["onecycle", "cosine"])
def test_step_schedules_start_low_peak_and_end_at_their_final_rate(kind):
    total = 200
    f = [lr_factor(kind, s, total) for s in range(total)]
    assert f[0] == pytest.approx(START) and max(f) == pytest.approx(1.0, abs=1e-3)
    assert f[-1] == pytest.approx(FINAL[kind])
    peak = int(np.argmax(f))
    assert np.all(np.diff(f[:peak + 1]) >= 0) and np.all(np.diff(f[peak:]) <= 0)   # up, then down
    assert lr_factor(kind, 5, None) == START      # while the clock is still measuring


def test_exponential_is_not_a_step_schedule():
    with pytest.raises(ValueError, match="not counted in steps"):
        lr_factor("exponential", 0, 10)


class FakeTime:
    """time.monotonic for the clock: advances only when told, so the sizing is checked, not the machine."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("step, val, per_epoch", [(1.0, 0.0, 1000), (1.0, 5.0, 10), (0.5, 2.0, 7)])
def test_clock_fills_the_budget_with_steps_and_validations(monkeypatch, step, val, per_epoch):
    fake = FakeTime()
    monkeypatch.setattr(schedules.time, "monotonic", fake)
    clock = Clock(seconds=60.0, steps_per_epoch=per_epoch, val_steps=val / step)
    clock.start_epoch()
    while True:
        fake.now += step
        done = clock.step_done()
        if clock.steps % per_epoch == 0 or done:      # an epoch ends (or the run): a validation
            fake.now += val
            clock.validated(val)
            clock.start_epoch()
        if done:
            break
    used = clock.elapsed()
    assert clock.steps == clock.total
    assert 60.0 - step - val <= used <= 60.0 + step, used    # within a step (and a validation) of the budget


@pytest.mark.parametrize("before, after", [(4.0, 1.0), (1.0, 3.0)])
def test_clock_follows_a_machine_that_changes_speed_mid_run(monkeypatch, before, after):
    """A shared CPU: steps take `before` seconds while another job runs, then `after`."""
    fake = FakeTime()
    monkeypatch.setattr(schedules.time, "monotonic", fake)
    clock = Clock(seconds=300.0, steps_per_epoch=10_000)
    clock.start_epoch()
    done = False
    while not done:
        fake.now += before if clock.steps < 20 else after
        done = clock.step_done()
    assert 300.0 - after <= clock.elapsed() <= 300.0 + after, clock.elapsed()   # within a step of the budget


def test_clock_state_survives_a_checkpoint(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(schedules.time, "monotonic", fake)
    clock = Clock(seconds=30.0, steps_per_epoch=5)
    clock.start_epoch()
    for _ in range(8):
        fake.now += 1.0
        clock.step_done()
    again = Clock.from_state(json.loads(json.dumps(clock.state())))   # plain values only
    assert (again.total, again.steps) == (clock.total, clock.steps)
    assert again.elapsed() == pytest.approx(clock.elapsed())


def test_a_run_in_minutes_ends_at_the_final_rate_and_records_its_steps(tmp_path, tiny_data):
    cfg = TrainConfig(n_frames=600, seed=3, image_size=48, batch_size=16, max_batches=4, progress=False,
                      minutes=0.15, out_dir=str(tmp_path / "run"))
    assert cfg.schedule == "onecycle"                        # the laptop preset's clock schedule
    result = train.fit(cfg, tiny_data)
    m = json.loads(result.metrics_path.read_text())["schedule"]
    assert m["steps"] == int(result.history["steps"].iloc[-1]) and m["epochs"] == len(result.history)
    assert m["last_lr"] == pytest.approx(cfg.lr * FINAL["onecycle"])    # the schedule reached its end
    assert m["run_seconds"] > 0 and m["minutes"] == 0.15


def test_a_run_in_steps_is_seeded_and_may_stop_mid_epoch(tmp_path, tiny_data):
    runs = [train.fit(TrainConfig(n_frames=600, seed=3, image_size=48, batch_size=16, max_batches=4, progress=False,
                                  steps=6, schedule="cosine", out_dir=str(tmp_path / name)), tiny_data) for name in "ab"]
    a, b = (r.history for r in runs)
    assert a["steps"].tolist() == [4, 6] and a["images"].tolist() == [64, 32]   # the second epoch stops after 2 steps
    assert a["train_loss"].tolist() == b["train_loss"].tolist()
    assert a["last_lr"].iloc[-1] == pytest.approx(0.0, abs=1e-12)              # cosine ends at 0


def test_epoch_runs_keep_the_exponential_schedule():
    cfg = TrainConfig()
    assert (cfg.schedule, cfg.minutes, cfg.steps) == ("exponential", 0.0, 0)
    assert TrainConfig(epochs=2, schedule="onecycle").schedule == "onecycle"   # sized to epochs x batches
    assert TrainConfig(preset="laptop_c", model="scan_cci_small", num_classes=7, minutes=1).schedule == "cosine"


@pytest.mark.parametrize("bad, message", [
    (dict(minutes=2, steps=10), "not both"), (dict(minutes=-1), "must be >= 0"),
    (dict(minutes=2, schedule="exponential"), "cannot be sized"), (dict(schedule="linear"), "schedule")])
def test_bad_schedule_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


@pytest.mark.parametrize("preset, model, source, size", [
    ("laptop", "dan", 112, 80), ("laptop", "dan", 48, 48), ("laptop", "dan", 40, 48), ("laptop", "dan", 70, 64),
    ("laptop", "resnet_classifier", 40, 32), ("laptop_d", "ddamfn", 48, 48), ("laptop", "dan", None, 80)])
def test_laptop_sizes_follow_the_source_down_to_what_the_model_needs(preset, model, source, size):
    assert fitted_image_size(preset, model, source) == size


def test_a_small_grey_source_trains_at_its_own_size(tmp_path):
    folder = tmp_path / "faces" / "cropped_aligned" / "v1"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / "00001.jpg")
    root = str(tmp_path / "faces")
    assert source_resolution(root) == 48
    cfg = TrainConfig(data_root=root)
    assert cfg.image_size == 48 and "below the laptop preset's 80 px" in image_size_note(cfg)
    assert TrainConfig(data_root=root, image_size=96).image_size == 96                # given: kept
    assert TrainConfig(data_root=root, preset="paper").image_size == 224               # the paper's recipe: kept
    assert "preset's size" in image_size_note(TrainConfig())                           # synthetic 112 px: 80


def test_the_command_line_takes_minutes_steps_and_schedule():
    args = cli._parser().parse_args(["--minutes", "2.5", "--schedule", "cosine"])
    assert (args.minutes, args.steps, args.schedule) == (2.5, 0, "cosine")
    assert cli._parser().parse_args(["--steps", "120"]).steps == 120
