"""bf16 autocast vs fp32, and the kit's fast path vs plain fp32, for every paper's model, in one run.

    python benchmarks/precision.py

For each model at its laptop preset (and the ResNet-50 models at 224 px): the time of a training step
(forward, fp32 loss, backward, optimiser) and of an inference batch, fp32 and bf16 interleaved, and their
ratio (bf16 / fp32: below 1 = bf16 faster). precision='auto' uses bf16 on a CPU only where it is native
(fer_kit.train.precision); on a CPU without it every ratio here is far above 1, which is why. The last column
is the kit's fast path (channels_last, precision='auto') against a plain fp32 NCHW eager step: its speedup.
"""
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.models.registry import LogitsOnly
from fer_kit.train.precision import cpu_has_native_bf16, resolve

MODELS = [dict(model="dan", preset="laptop"),
          dict(model="regnet_transformer", preset="laptop_b", variant="no_att_trans", clip_length=1),
          dict(model="scan_cci_small", preset="laptop_c", num_classes=7, backbone="resnet50"),
          dict(model="ddamfn", preset="laptop_d"),
          dict(model="dan_landmarks", preset="laptop_e", num_classes=6, backbone="resnet18"),
          dict(model="dan", image_size=112),
          dict(model="dan", image_size=112, batch_size=64),      # the batch the kit trains DAN with
          dict(model="dan_r50", image_size=224, batch_size=16),
          dict(model="scan_cci", preset="laptop_c", num_classes=7, image_size=224, batch_size=16),
          dict(model="resnet_classifier", backbone="resnet50", image_size=224, batch_size=16)]


def measure(spec: dict, repeats: int = 5) -> dict:
    """Seconds per training step and per inference batch for plain fp32 NCHW, fp32 channels_last and bf16
    channels_last: three copies of one model, their steps interleaved round by round (this machine's speed
    drifts), the median of each and of the fast path's per-round speedup."""
    batch = spec.get("batch_size", 32)
    cfg = TrainConfig(**{**spec, "batch_size": batch}, progress=False)
    torch.manual_seed(0)
    base = LogitsOnly(train.build_model(cfg))
    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (batch,))
    auto = resolve("auto", "cpu", base).name
    steps, infers = {}, {}
    for name, layout in (("plain", torch.contiguous_format), ("fp32", torch.channels_last),
                         ("bf16", torch.channels_last)):
        p = resolve("fp32" if name == "plain" else name, "cpu")
        model = copy.deepcopy(base).to(memory_format=layout)
        xs, opt = x.contiguous(memory_format=layout), torch.optim.Adam(model.parameters(), 1e-4)

        def step(model=model, xs=xs, opt=opt, p=p):
            model.train()
            with p.autocast():
                logits = model(xs)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        @torch.no_grad()
        def infer(model=model, xs=xs, p=p):
            model.eval()
            with p.autocast():
                model(xs)
        steps[name], infers[name] = step, infer
    times = {f"{kind}_{name}": [] for kind in ("train", "eval") for name in steps}
    for round_ in range(repeats + 1):                      # round 0 warms up (oneDNN picks its kernels)
        for kind, fns in (("train", steps), ("eval", infers)):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if round_:
                    times[f"{kind}_{name}"].append(time.perf_counter() - start)
    out = {"size": cfg.image_size, "batch": batch, "auto": auto}
    out.update({k: statistics.median(v) for k, v in times.items()})
    out["fast_speedup"] = statistics.median(p / f for p, f in zip(times["train_plain"], times[f"train_{auto}"]))
    return out


if __name__ == "__main__":
    print(f"threads: {torch.get_num_threads()}   native bf16 (CPU flags): {cpu_has_native_bf16()}   "
          f"auto -> {resolve('auto', 'cpu')}")
    print(f"{'model':18s} {'px':>4s} {'batch':>5s} {'train fp32 s':>12s} {'bf16/fp32':>9s} {'eval fp32 s':>11s} "
          f"{'bf16/fp32':>9s}  {'fast path vs plain fp32 NCHW (train)':s}")
    for spec in MODELS:
        r = measure(spec)
        print(f"{spec['model']:18s} {r['size']:4d} {r['batch']:5d} {r['train_fp32']:12.3f} "
              f"{r['train_bf16'] / r['train_fp32']:9.2f} {r['eval_fp32']:11.3f} {r['eval_bf16'] / r['eval_fp32']:9.2f}  "
              f"{r['fast_speedup']:.2f}x ({r['auto']}, channels_last)")
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU table (fp16 vs bf16 vs fp32) is skipped")
