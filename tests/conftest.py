"""Fixtures shared by the tests (the settings that nbval's notebooks need too live in ../conftest.py)."""
import os

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fer_kit_cache")
    os.environ["FER_KIT_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_synthetic(cache_dir):
    """A small synthetic ABAW dataset (every class in both splits), generated once per session."""
    from fer_kit.data.synthetic import SyntheticConfig, ensure_synthetic

    return ensure_synthetic(SyntheticConfig(n_frames=600, seed=3), cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="session")
def mtl_only(tiny_synthetic, tmp_path_factory):
    """An ABAW root in the MTL format only (as ABAW3/4/7 ship it): cropped_aligned/ and the 16-column
    csv, no per-task folders, no landmarks."""
    import shutil

    root = tmp_path_factory.mktemp("mtl_only")
    shutil.copytree(tiny_synthetic / "cropped_aligned", root / "cropped_aligned")
    shutil.copytree(tiny_synthetic / "annotations" / "MTL_Challenge", root / "annotations" / "MTL_Challenge")
    return root


@pytest.fixture
def overfit():
    """Adam on one fixed batch until the loss falls below 10% of its start: returns the losses seen."""
    import torch

    def run(loss_fn, params, steps: int, lr: float):
        opt = torch.optim.Adam(params, lr=lr)
        losses = []
        for _ in range(steps):
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if losses[-1] < 0.1 * losses[0]:
                break
        return losses
    return run
