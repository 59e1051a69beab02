"""Paper D's DDAMFN (fer_kit/models/ddamfn.py) and the published-checkpoint loader (checkpoints.py)."""
import re
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from fer_kit.data.synthetic import AU_THRESHOLD, render_faces
from fer_kit.losses import DDAMFNLoss
from fer_kit.models import create_model
from fer_kit.models.checkpoints import load_published_checkpoint
from fer_kit.models.ddamfn import DDAMFN, NUM_PARAMS_EXPR, NUM_PARAMS_MTL


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------------- structure and shapes

def test_parameter_counts_match_the_paper_and_the_module_constants():
    assert n_params(DDAMFN()) == 4_113_694 == NUM_PARAMS_MTL                    # VA 2 + EXPR 8 + AU 12
    assert n_params(DDAMFN(tasks=("EXPR",))) == 4_106_512 == NUM_PARAMS_EXPR    # DDAMFN's "4.11M"
    assert n_params(create_model("ddamfn")) == NUM_PARAMS_MTL                   # the registry's default


def test_multitask_output_shapes():
    m = create_model("ddamfn").eval()
    assert isinstance(m, DDAMFN) and m.tasks == ("VA", "EXPR", "AU")
    with torch.no_grad():
        out = m(torch.rand(2, 3, 112, 112))
    assert out.va.shape == (2, 2) and out.expr.shape == (2, 8) and out.au.shape == (2, 12)
    assert out.heads.shape == (2, 2, 512, 7, 7)
    assert out.features.shape == (2, 512, 7, 7) and out.embedding.shape == (2, 512)
    assert (out.va.abs() <= 1).all()                                   # tanh: VA's range
    assert ((out.heads > 0) & (out.heads < 1)).all()                   # products of two sigmoids
    assert out.logits is out.expr


@pytest.mark.parametrize("task,field,width", [("VA", "va", 2), ("EXPR", "expr", 8), ("AU", "au", 12)])
def test_single_task_variants(task, field, width):
    m = DDAMFN(tasks=(task,), num_heads=1).eval()
    assert len(m.task_heads()) == 1
    with torch.no_grad():
        out = m(torch.rand(2, 3, 112, 112))
    for name in ("va", "expr", "au"):
        assert (getattr(out, name) is None) == (name != field)
    assert getattr(out, field).shape == (2, width)
    assert out.logits is getattr(out, field)
    assert out.heads.shape == (2, 1, 512, 7, 7)


def test_wrong_input_size_is_a_clear_error():
    m = DDAMFN(tasks="EXPR")
    with pytest.raises(ValueError, match=r"\(B, 3, 112, 112\); got \(1, 3, 224, 224\)"):
        m(torch.rand(1, 3, 224, 224))
    with pytest.raises(ValueError, match=r"got \(3, 112, 112\)"):
        m(torch.rand(3, 112, 112))
    with pytest.raises(ValueError, match="num_heads"):
        DDAMFN(num_heads=0)
    with pytest.raises(ValueError):
        DDAMFN(tasks=("EXPR", "EXPR"))


# ------------------------------------------------------------------------------------- gradients

def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = DDAMFN()
    out = m(torch.rand(2, 3, 112, 112))
    (out.va.sum() + out.expr.sum() + out.au.sum() + out.heads.sum()).backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_freeze_features_leaves_only_the_task_heads_trainable():
    m = DDAMFN()
    m.freeze_features()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {f"{h}.{w}" for h in ("va_head", "expr_head", "au_head") for w in ("weight", "bias")}
    m.freeze_features(False)
    assert all(p.requires_grad for p in m.parameters())


def test_overfits_one_batch_of_synthetic_faces():
    """32 synthetic faces with their EXPR, AU (intensity >= 0.5) and VA labels, trained with paper D's loss.

    One step through the 36-block trunk costs several seconds at batch 32 on this 2-core CPU, so the trunk
    runs once (train mode, no grad) and everything after it - the two attention heads, GDConv and the
    three task heads - is trained through `forward_head`. Gradient flow into the trunk is covered by
    test_gradients_reach_every_parameter. The VA head gets a lower learning rate: with Adam at 1e-2 its
    tanh saturates within a few steps (pre-activations of +-20) and the CCC term stalls.
    """
    faces = render_faces(32, seed=0)
    x = torch.from_numpy(faces["images"]).permute(0, 3, 1, 2).float().div(255)
    expr = torch.as_tensor(faces["labels"]).long()
    au = torch.as_tensor((faces["au"] >= AU_THRESHOLD).astype(np.float32))
    va = torch.as_tensor(faces["va"])
    torch.manual_seed(0)
    m = DDAMFN()
    with torch.no_grad():
        f = m.forward_features(x)                                       # (32, 512, 7, 7)
    m.trunk.requires_grad_(False)
    criterion = DDAMFNLoss()
    va_params = list(m.va_head.parameters())
    rest = [p for n, p in m.named_parameters() if p.requires_grad and not n.startswith("va_head.")]
    opt = torch.optim.Adam([{"params": rest}, {"params": va_params, "lr": 1e-3}], lr=1e-2)
    history = []
    for _ in range(40):
        parts = criterion(m.forward_head(f), va=va, expr=expr, au=au)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in parts.items()})
    first, last = history[0], history[-1]
    tasks = lambda h: h["va"] + h["expr"] + h["au"]             # noqa: E731
    assert last["loss"] < 0.1 * first["loss"], history[::5]
    assert tasks(last) < 0.1 * tasks(first), history[::5]


# -------------------------------------------------------------------------------------- checkpoints

# The inverse of checkpoints.py's map: kit name -> published name, under both published spellings.
_STAGES = {"stem": ("conv1", "features.0"), "stem_dw": ("conv2_dw", "features.1"), "down1": ("conv_23", "features.2"),
           "stage1": ("conv_3.model", "features.3.model"), "down2": ("conv_34", "features.4"),
           "stage2": ("conv_4.model", "features.5.model"), "down3": ("conv_45", "features.6"),
           "stage3": ("conv_5.model", "features.7.model"), "expand": ("conv_6_sep", "features.8")}
_IN_BLOCK = {"expand": "conv", "mixconv": "conv_dw", "coord_att": "CA"}
_IN_BLOCK_CA = {"reduce": "conv1", "bn": "bn1", "attn_h": "conv2", "attn_w": "conv3"}
_IN_HEAD = {"pool_h": "Linear_h", "pool_w": "Linear_w", "reduce": "conv1", "bn": "bn1", "attn_h": "conv2",
            "attn_w": "conv3"}


def to_published(key: str, spelling: int) -> str | None:
    """A kit key's name in SainingZhang/DDAMFN's files (spelling 0: MixedFeatureNet, 1: DDAMNet.features);
    None for the kit's task heads, which the published files do not have."""
    parts = key.split(".")
    if parts[0] == "trunk":
        stage = parts[1]
        if stage.startswith("stage"):                                   # trunk.stageN.<i>.<block keys>
            prefix, rest, block = f"{_STAGES[stage][spelling]}.{parts[2]}", parts[3:], True
        else:
            prefix, rest, block = _STAGES[stage][spelling], parts[2:], stage.startswith("down")
        if block:
            if rest[0] == "mixconv":                      # mixconv.convs.i -> conv_dw.mixed_depthwise_conv.i
                rest = ["conv_dw", "mixed_depthwise_conv"] + rest[2:]
            elif rest[0] == "coord_att":
                rest = ["CA", _IN_BLOCK_CA[rest[1]]] + rest[2:]
            else:
                rest = [_IN_BLOCK.get(rest[0], rest[0])] + rest[1:]       # expand -> conv; project stays
        rest = ["prelu" if r == "act" else r for r in rest]             # Conv_block's PReLU
        return ".".join([prefix] + rest)
    if parts[0] == "heads":
        return ".".join([f"cat_head{parts[1]}", "CoordAtt", _IN_HEAD[parts[2]]] + parts[3:])
    if parts[0] == "gdconv":
        return ".".join(["Linear"] + parts[1:])
    return None


def _bn(prefix: str, n: int) -> dict:
    return {f"{prefix}.weight": torch.rand(n), f"{prefix}.bias": torch.randn(n),
            f"{prefix}.running_mean": torch.randn(n),
            f"{prefix}.running_var": torch.rand(n) + 0.5, f"{prefix}.num_batches_tracked": torch.tensor(7)}


def published_state(source: DDAMFN, spelling: int, ddamnet: bool = True) -> tuple[dict, list[str]]:
    """A fake published checkpoint holding `source`'s weights, plus the dead keys the kit must skip."""
    state = {}
    for k, v in source.state_dict().items():
        new = to_published(k, spelling)
        if new is not None and (ddamnet or k.startswith("trunk.")):
            state[new] = v.clone()
    dead = {}
    blocks = [("conv_23", "features.2", 128), ("conv_34", "features.4", 256), ("conv_45", "features.6", 1024)]
    blocks += [(f"conv_3.model.{i}", f"features.3.model.{i}", 128) for i in range(9)]
    blocks += [(f"conv_4.model.{i}", f"features.5.model.{i}", 256) for i in range(16)]
    blocks += [(f"conv_5.model.{i}", f"features.7.model.{i}", 512) for i in range(6)]
    for names in blocks:                                              # MDConv's bn/prelu, never called
        prefix, g = names[spelling], names[2]
        dead.update(_bn(f"{prefix}.conv_dw.bn", g))
        dead[f"{prefix}.conv_dw.prelu.weight"] = torch.rand(g)
    if ddamnet:
        for i in range(2):                                            # each head's 7x7 Linear, never called
            dead[f"cat_head{i}.CoordAtt.Linear.conv.weight"] = torch.randn(512, 1, 7, 7)
            dead.update(_bn(f"cat_head{i}.CoordAtt.Linear.bn", 512))
        dead.update(_bn("bn", 8))                                     # DDAMNet's BN1d after fc, never called
        dead["fc.weight"], dead["fc.bias"] = torch.randn(8, 512), torch.randn(8)   # AffectNet's classifier
    else:                                                             # MobileFaceNet's embedding tail
        dead["conv_6_dw.conv.weight"] = torch.randn(512, 1, 7, 7)
        dead.update(_bn("conv_6_dw.bn", 512))
        dead["linear.weight"] = torch.randn(256, 512)
        dead.update(_bn("bn", 256))
    state.update(dead)
    return state, sorted(dead)


def randomised(model: nn.Module) -> nn.Module:
    """Every parameter and buffer set to a distinctive value, so a copy cannot match by accident."""
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in k else torch.randn_like(t))
            else:
                t.fill_(11)
    return model


def _kit_keys(model, prefixes=("trunk.", "heads.", "gdconv.")):
    return [k for k in model.state_dict() if k.startswith(prefixes)]


def test_inverse_map_covers_every_published_tensor():
    """Sanity check of the test's own inverse map: published names are unique and look published."""
    src = DDAMFN()
    for spelling in (0, 1):
        names = [to_published(k, spelling) for k in _kit_keys(src)]
        assert len(set(names)) == len(names)
        assert not any(re.search(r"\b(trunk|stage\d|mixconv|coord_att|pool_h|reduce|attn_h|gdconv|act)\b", n)
                       for n in names)
    assert to_published("trunk.stage2.3.mixconv.convs.1.weight", 0) == \
        "conv_4.model.3.conv_dw.mixed_depthwise_conv.1.weight"
    assert to_published("trunk.down1.expand.act.weight", 1) == "features.2.conv.prelu.weight"
    assert to_published("heads.1.pool_w.bn.running_var", 0) == "cat_head1.CoordAtt.Linear_w.bn.running_var"


@pytest.mark.parametrize("spelling", [0, 1], ids=["MixedFeatureNet-names", "DDAMNet-features"])
def test_loads_a_published_ddamnet_checkpoint(tmp_path, spelling):
    torch.manual_seed(1)
    source = randomised(DDAMFN())
    state, dead = published_state(source, spelling)
    path = tmp_path / "affecnet8_epoch25_acc0.6469.pth"
    torch.save({"iter": 25, "model_state_dict": {"module." + k: v for k, v in state.items()}, "acc": 0.6469}, path)

    torch.manual_seed(2)
    fresh = DDAMFN()
    expr_head_before = fresh.expr_head.weight.detach().clone()
    report = load_published_checkpoint(fresh, path)
    src, got = source.state_dict(), fresh.state_dict()
    keys = _kit_keys(source)
    assert [k for k in keys if not torch.equal(got[k], src[k])] == []
    assert sorted(report.loaded) == sorted(keys)
    assert sorted(report.skipped) == sorted("module." + k for k in dead)       # dead layers and fc skipped
    assert report.unmatched == []
    assert sorted(report.missing) == sorted(k for k in got if k.startswith(("va_head", "expr_head", "au_head")))
    assert torch.equal(fresh.expr_head.weight, expr_head_before)                # fc not loaded by default

    # load_classifier=True copies the published fc into expr_head (classes in AffectNet order)
    other = DDAMFN(tasks=("EXPR",))
    load_published_checkpoint(other, path, load_classifier=True)
    assert torch.equal(other.expr_head.weight, state["fc.weight"])
    assert torch.equal(other.expr_head.bias, state["fc.bias"])
    # and the constructor's checkpoint_path goes through the same loader
    built = DDAMFN(checkpoint_path=path)
    assert torch.equal(built.state_dict()["gdconv.conv.weight"], src["gdconv.conv.weight"])


def test_unrelated_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save({"state_dict": {"layer1.0.conv1.weight": torch.randn(64, 64, 3, 3), "fc.weight": torch.randn(8, 512)}},
               path)
    fresh = DDAMFN(tasks="EXPR")
    before = fresh.trunk.stem.conv.weight.detach().clone()
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*only 0 of \d+ trunk weights"):
        load_published_checkpoint(fresh, path)
    assert torch.equal(fresh.trunk.stem.conv.weight, before)                    # nothing was loaded


def _pickled_mfn(state: dict, monkeypatch) -> nn.Module:
    """A whole pickled module like MFN_msceleb.pth: its class lives in `networks.MixedFeatureNet`, which
    exists only while saving (as on the authors' machine) and cannot be imported when loading."""
    pkg, mod = types.ModuleType("networks"), types.ModuleType("networks.MixedFeatureNet")
    cls = type("MixedFeatureNet", (nn.Module,), {"__module__": "networks.MixedFeatureNet"})
    mod.MixedFeatureNet, pkg.MixedFeatureNet = cls, mod
    monkeypatch.setitem(sys.modules, "networks", pkg)
    monkeypatch.setitem(sys.modules, "networks.MixedFeatureNet", mod)
    root = cls()
    for key, value in state.items():                                  # nested plain modules, one per name part
        *path, leaf = key.split(".")
        m = root
        for part in path:
            if part not in m._modules:
                m.add_module(part, nn.Module())
            m = m._modules[part]
        if value.is_floating_point() and not leaf.startswith("running_"):
            m.register_parameter(leaf, nn.Parameter(value))
        else:
            m.register_buffer(leaf, value)
    return root


def test_whole_pickled_module_needs_trust_pickle(tmp_path, monkeypatch):
    torch.manual_seed(3)
    source = randomised(DDAMFN(tasks="EXPR"))
    state, _ = published_state(source, 0, ddamnet=False)             # MFN names + embedding tail
    path = tmp_path / "MFN_msceleb.pth"
    with monkeypatch.context() as mp:
        torch.save(_pickled_mfn(state, mp), path)
    assert "networks" not in sys.modules or not hasattr(sys.modules["networks"], "MixedFeatureNet")

    fresh = DDAMFN(tasks="EXPR")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*pickled.*trust_pickle=True"):
        load_published_checkpoint(fresh, path)
    report = load_published_checkpoint(fresh, path, trust_pickle=True)
    src, got = source.state_dict(), fresh.state_dict()
    trunk = _kit_keys(source, ("trunk.",))
    assert [k for k in trunk if not torch.equal(got[k], src[k])] == []
    assert sorted(report.loaded) == sorted(trunk)
    assert report.unmatched == []
    assert all(k.startswith(("heads.", "gdconv.", "expr_head.")) for k in report.missing)


def test_whole_model_overfits_32_faces(overfit):
    """The whole network, trunk included, on 32 faces (EXPR): a few steps suffice when everything trains."""
    faces = render_faces(32, seed=0)
    x = torch.from_numpy(faces["images"]).permute(0, 3, 1, 2).float().div(255)
    y = torch.as_tensor(faces["labels"]).long()
    torch.manual_seed(0)
    m = DDAMFN(tasks=("EXPR",))
    losses = overfit(lambda: torch.nn.functional.cross_entropy(m(x).expr, y), m.parameters(), 15, 3e-3)
    assert losses[-1] < 0.1 * losses[0], losses


def test_smaller_inputs_size_the_global_kernels_to_the_map():
    m = DDAMFN(image_size=64)
    assert m.map_size == 4 and m.gdconv.conv.kernel_size == (4, 4)
    out = m.eval()(torch.randn(2, 3, 64, 64))
    assert out.heads.shape == (2, 2, 512, 4, 4) and out.embedding.shape == (2, 512) and out.au.shape == (2, 12)
    assert DDAMFN().map_size == 7
    with pytest.raises(ValueError, match=r"image_size=64\) expects faces shaped \(B, 3, 64, 64\)"):
        m(torch.randn(2, 3, 112, 112))
