"""Backbone weights (fer_kit/models/backbones.py): timm pretrained=True with a clear message offline, and
local face-trained checkpoints with key remapping: DAN's MS-Celeb ResNet-18 (`resnet18_msceleb.pth`) and
VGGFace2-pytorch's ResNet-50 (`resnet50_ft_weight.pkl`, papers A, C, E). Nothing here downloads: every
checkpoint is written by the test in the exact format of the published file."""
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from fer_kit.losses import DANLoss
from fer_kit.models import backbones, create_model, scan_cci
from fer_kit.models.backbones import create_backbone, load_trunk_weights, read_weights


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float parameter and buffer random (BN running stats too), so 'loaded' cannot mean 'left at init'."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.ndim == 1
                        else torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def _py2_pickle(state: dict) -> bytes:
    """A dict name -> numpy array pickled the way Python 2.7 + numpy 1.x wrote resnet50_ft_weight.pkl:
    protocol 2, names and array bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING, which Python 3 reads
    back with encoding='latin1'), numpy.core.multiarray._reconstruct + ndarray.__setstate__."""
    def s(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b

    def i(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    out = [b"\x80\x02}("]                                                      # PROTO 2, EMPTY_DICT, MARK
    for name, a in state.items():
        a = np.ascontiguousarray(a)
        endian, kind = a.dtype.str[0], a.dtype.str[1:]
        out += [s(name.encode()),
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n", i(0), b"\x85", s(b"b"), b"\x87R",
                b"(", i(1), b"(" + b"".join(i(d) for d in a.shape) + b"t",   # state: (1, shape, dtype, False, data)
                b"cnumpy\ndtype\n", s(kind.encode()), i(0), i(1), b"\x87R",
                b"(", i(3), s(endian.encode()), b"NNN", i(-1), i(-1), i(0), b"tb",
                b"\x89", s(a.tobytes()), b"tb"]
    return b"".join(out) + b"u."                                               # SETITEMS, STOP


@pytest.fixture(scope="module")
def msceleb_r18():
    """DAN's resnet18_msceleb.pth: torchvision resnet18 weights (with fc) under 'state_dict'."""
    return _randomised(torchvision.models.resnet18(num_classes=1000), seed=1)


@pytest.fixture(scope="module")
def vggface2_r50(tmp_path_factory):
    """VGGFace2-pytorch's resnet50_ft_weight.pkl: torchvision ResNet-50 names, fc for 8631 identities,
    numpy arrays, no num_batches_tracked."""
    src = _randomised(torchvision.models.resnet50(num_classes=8631), seed=2)
    state = {k: v.numpy() for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path_factory.mktemp("vggface2") / "resnet50_ft_weight.pkl"
    path.write_bytes(_py2_pickle(state))
    return src, path


def _assert_trunk_equals(trunk, src):
    own, ref = trunk.state_dict(), src.state_dict()
    weights = [k for k in own if not k.endswith("num_batches_tracked")]
    assert len(weights) > 50
    for k in weights:
        assert torch.equal(own[k], ref[k]), k


def test_pretrained_offline_message(monkeypatch):
    real = backbones.timm.create_model
    calls = []

    def offline(name, pretrained=False, **kw):   # what timm / huggingface_hub raise without a network
        calls.append(pretrained)
        if pretrained:
            raise OSError("Network is unreachable")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(backbones.timm, "create_model", offline)
    expected = r"'resnet50'.*offline.*internet access.*checkpoint_path=.*pretrained=False"
    with pytest.raises(RuntimeError, match=expected) as err:
        create_backbone("resnet50", pretrained=True)
    assert isinstance(err.value.__cause__, OSError)
    # the paper E model fails the same way, from whichever branch asks for timm weights
    with pytest.raises(RuntimeError, match="offline"):
        create_model("test_dan_landmarks", pretrained=True)
    with pytest.raises(RuntimeError, match="offline"):
        create_model("test_dan_landmarks", pretrained=False, landmark_pretrained=True)
    assert create_backbone("resnet18").num_features == 512    # pretrained=False never asks for weights
    assert calls[-1] is False


def test_msceleb_resnet18_checkpoint_as_dan_ships_it(tmp_path, msceleb_r18):
    src = msceleb_r18
    # DataParallel-saved, wrapped in 'state_dict', torchvision names incl. fc (which a trunk has not); both
    # torch serialisations (the zip format and the legacy one older checkpoints use)
    state = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 12}
    torch.save(state, tmp_path / "resnet18_msceleb.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for name in ("resnet18_msceleb.pth", "legacy.pth"):
        trunk = create_backbone("resnet18", checkpoint_path=tmp_path / name).eval()
        _assert_trunk_equals(trunk, src)
        assert load_trunk_weights(trunk, tmp_path / name) == []     # nothing left unloaded
    # torchvision's layout is timm's: the loaded trunk computes torchvision's feature map exactly
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = torch.nn.Sequential(*list(src.children())[:-2])(x)
        assert torch.allclose(trunk(x), ref, atol=1e-5)


def test_vggface2_resnet50_pkl(vggface2_r50):
    src, path = vggface2_r50
    # the crafted file is a genuine numpy pickle: plain pickle reads the same arrays
    plain = pickle.loads(path.read_bytes(), encoding="latin1")
    assert plain["fc.weight"].shape == (8631, 2048)
    assert np.array_equal(plain["layer4.2.bn3.running_var"], src.layer4[2].bn3.running_var.numpy())
    # ... and the safe reader too, into DAN-R50 / paper E's trunk
    trunk = create_backbone("resnet50", checkpoint_path=path)
    _assert_trunk_equals(trunk, src)
    # num_batches_tracked counters are absent from the file and not weights: nothing reported missing
    assert load_trunk_weights(trunk, path) == []


def test_vggface2_pkl_into_dan_r50_and_paper_e(vggface2_r50):
    src, path = vggface2_r50
    m = create_model("dan_r50", num_classes=6, checkpoint_path=str(path))
    _assert_trunk_equals(m.features, src)
    # paper E started both branches from the VGGFace2 ResNet-50
    m = create_model("dan_landmarks_r50", checkpoint_path=str(path), landmark_checkpoint_path=str(path))
    _assert_trunk_equals(m.features, src)
    _assert_trunk_equals(m.appearance, src)
    m.eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 6) and out.landmarks.shape == (2, 68, 2)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pkl_written_by_python3(tmp_path, protocol):
    """The same dict re-pickled from Python 3 / numpy 2 at any protocol (2 stores bytes via _codecs.encode,
    5 uses numpy's _frombuffer), with dtypes other than float32 and 0-d entries."""
    state = {"conv1.weight": np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32),
             "bn1.running_var": np.arange(4, dtype=np.float64),
             "bn1.num_batches_tracked": np.int64(7), "step": np.array(3)}
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    got = read_weights(path)
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], torch.as_tensor(np.asarray(v))), k
    assert got["bn1.running_var"].dtype == torch.float64
    # a .pkl that torch.save wrote (a zip) is read with torch.load
    torch.save({"state_dict": {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}}, tmp_path / "t.pkl")
    assert torch.equal(read_weights(tmp_path / "t.pkl")["conv1.weight"], got["conv1.weight"])


class _Payload:
    """What a tampered weights file would hold: an object whose unpickling runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Thing:
    pass


def test_pickle_with_anything_but_arrays_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    cases = {
        "os_system.pkl": pickle.dumps({"conv1.weight": np.zeros(3), "x": _Payload(marker)}, protocol=2),
        "instance.pkl": pickle.dumps({"conv1.weight": _Thing()}),
        "builtin.pkl": pickle.dumps({"conv1.weight": np.zeros(1), "f": print}),
        # _codecs.encode is accepted only as protocol 2's latin-1 bytes, not with another codec
        "codec.pkl": b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x0a\x00\x00\x00zlib_codec\x86R.",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(pickle.UnpicklingError, match=rf"{name}: refusing to unpickle"):
            load_trunk_weights(create_backbone("resnet18"), tmp_path / name)
    assert not marker.exists()                       # nothing ran
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system|os\.system|nt\.system"):
        read_weights(tmp_path / "os_system.pkl")
    # containers and numbers build without any global, but they are not weights either
    (tmp_path / "list.pkl").write_bytes(pickle.dumps({"conv1.weight": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"list.pkl: entry 'conv1.weight' is list, not a numeric numpy array"):
        read_weights(tmp_path / "list.pkl")
    (tmp_path / "objects.pkl").write_bytes(pickle.dumps({"w": np.array([1, "a"], dtype=object)}, protocol=2))
    with pytest.raises(ValueError, match="dtype object"):
        read_weights(tmp_path / "objects.pkl")
    (tmp_path / "array.pkl").write_bytes(pickle.dumps(np.zeros(3)))
    with pytest.raises(ValueError, match="array.pkl: expected a dict"):
        read_weights(tmp_path / "array.pkl")
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"w": np.zeros(100)})[:50])
    with pytest.raises(pickle.UnpicklingError, match="truncated.pkl"):
        read_weights(tmp_path / "truncated.pkl")


def test_wrong_network_and_missing_file(tmp_path, msceleb_r18, vggface2_r50):
    torch.save({"state_dict": msceleb_r18.state_dict()}, tmp_path / "resnet18_msceleb.pth")
    with pytest.raises(ValueError, match=r"resnet18_msceleb.pth: only \d+ of 265 backbone weights matched.*backbone\?"):
        create_backbone("resnet50", checkpoint_path=tmp_path / "resnet18_msceleb.pth")
    with pytest.raises(ValueError, match=r"resnet50_ft_weight.pkl: only \d+ of 100 backbone weights matched"):
        create_backbone("resnet18", checkpoint_path=vggface2_r50[1])
    # a deeper network of the same family matches every name of the shallower one: still the wrong network
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match=r"resnet34.pth: 80 of its 180 backbone weights have no place.*layer1\.2\."):
        create_backbone("resnet18", checkpoint_path=tmp_path / "resnet34.pth")
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth.*matched"):
        create_model("dan", checkpoint_path=str(tmp_path / "other.pth"))
    missing = tmp_path / "no_such_dir" / "resnet50_ft_weight.pkl"
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*no_such_dir/resnet50_ft_weight\.pkl"):
        create_backbone("resnet50", checkpoint_path=missing)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        create_model("test_dan_landmarks", landmark_checkpoint_path=str(missing))


def test_dan_with_checkpoint_end_to_end(tmp_path, msceleb_r18):
    torch.save({"state_dict": {f"module.{k}": v for k, v in msceleb_r18.state_dict().items()}},
               tmp_path / "resnet18_msceleb.pth")
    torch.manual_seed(0)
    m = create_model("dan", num_classes=8, checkpoint_path=str(tmp_path / "resnet18_msceleb.pth"))
    _assert_trunk_equals(m.features, msceleb_r18)
    crit = DANLoss(8)
    opt = torch.optim.Adam([*m.parameters(), *crit.parameters()], 1e-3)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    loss = crit(m(x).logits, m(x).features, m(x).heads, y)["loss"]
    opt.zero_grad()
    loss.backward()
    assert m.features.conv1.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(m.features.conv1.weight, msceleb_r18.conv1.weight)   # it trains from the checkpoint
    m.eval()
    with torch.no_grad():
        assert F.softmax(m(x).logits, 1).shape == (4, 8)


def test_scan_cci_reads_pkl_through_backbones():
    # the safe reader lives in backbones; scan_cci's names still point at it
    assert scan_cci._read_weights is backbones._read_weights
    assert scan_cci._SafeNumpyUnpickler is backbones._SafeNumpyUnpickler
