import torch

from fer_kit.models import create_model
from fer_kit.models.summary import count_parameters, trace_shapes


def test_trace_shapes_reads_every_stage_off_the_model():
    model = create_model("dan", num_classes=8)
    df = trace_shapes(model, torch.randn(2, 3, 112, 112))
    shapes = dict(zip(df["stage"], df["output shape"]))
    assert shapes["features"] == "2x512x4x4"                      # ResNet-18 trunk at 112 px: stride 32 (rounded up)
    assert [s for s in shapes if s.startswith("heads.")] == [f"heads.{i}" for i in range(4)]  # ModuleList looked through
    assert shapes["heads.0"].startswith("2x512") and shapes["fc"] == "2x8"
    stages = df[df["stage"] != "(output)"]
    assert stages["parameters"].sum() == count_parameters(model) == df["parameters"].iloc[-1] == 19_724_248
    assert model.training                                         # left as it was found


def test_trace_at_paper_size_and_112():
    from fer_kit.models.summary import input_sizes, trace_registered

    assert input_sizes("scan_cci") == (224, 112) and input_sizes("ddamfn") == (112,) and input_sizes("test_dan") == (112,)
    _, table = trace_registered("regnet_transformer", clip_length=5)
    shapes = dict(zip(table["stage"], table["output @ 112 px"]))
    assert shapes["backbone"] == "5x888x4x4" and shapes["trans"] == "1x5x888" and shapes["fc"] == "1x5x8"
    _, table = trace_registered("dan", batch=3)
    assert list(table.columns) == ["stage", "module", "output @ 224 px", "output @ 112 px", "parameters"]
    row = table.set_index("stage").loc["features"]
    assert row["output @ 224 px"] == "3x512x7x7" and row["output @ 112 px"] == "3x512x4x4"


def test_parameter_counts_beside_published_figures():
    from fer_kit.papers import parameter_comparison

    df = parameter_comparison()
    by = {(r["kit model"], r["kind"]): r for _, r in df.iterrows()}
    assert by[("dan", "counted")]["kit parameters"] == 19_724_248 == by[("dan", "counted")]["published parameters"]
    assert abs(by[("dan", "reported")]["kit - published"]) < 5_000               # 19.72M, rounded
    ddamfn = by[("ddamfn", "reported")]
    assert ddamfn["kit parameters"] == 4_106_512 and abs(ddamfn["kit - published"]) < 5_000   # 4.11M
    assert by[("ddamfn", "counted")]["kit - published"] == -81_424               # the code's dead layers
    for name in ("dan_r50", "regnet_transformer", "dan_landmarks_r50"):
        assert by[(name, "counted")]["kit - published"] == 0, name
    assert abs(by[("scan_cci_code", "counted (rounded)")]["kit - published"]) < 50_000   # about 70.2M
