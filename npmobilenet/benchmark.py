"""``npmobilenet bench``: the same MobileNet workloads in npmobilenet and, where installed,
PyTorch and onnxruntime, timed alternately in one run so the ratios compare like with like.

Workloads (224x224, float32): v1, v2, v3-large and v4-conv-small inference at batch 1 and 8, and
a training step (forward, backward, SGD update) at batch 16. Each is warmed up, then timed ``repeats`` times,
alternating frameworks; medians are reported. Peak memory of a training step is measured in a
fresh subprocess per framework, and start-up as the time to the first v2 inference in a new
process with an empty and with a filled Numba cache. torch is imported only here, lazily.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import functional as F
from .autograd import no_grad
from .model import build_model
from .optim import SGD

SIZE = 224
WORKLOADS = [(arch, kind, batch)
             for arch in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v4_conv_small")
             for kind, batch in (("inference", 1), ("inference", 8), ("train step", 16))]


def _ours(arch: str, kind: str, batch: int):
    model = build_model(arch, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, SIZE, SIZE, 3)).astype(np.float32)
    if kind == "inference":
        model.eval()

        def infer():
            with no_grad():
                model(x)
        return infer, model.graph
    labels = rng.integers(0, 1000, batch)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return step, model.graph


def torch_model(graph):
    """A torch twin of ``graph``: each node's kind builds its torch module (symmetric padding),
    for timing only."""
    from torch import nn

    from .kinds import KINDS

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.order = [(node.name.replace("/", "__"), [i.replace("/", "__") for i in node.inputs])
                          for node in graph.nodes]
            self.blocks = nn.ModuleDict({node.name.replace("/", "__"): KINDS[node.op].torch(node)
                                         for node in graph.nodes})

        def forward(self, x):
            values = {"input": x}
            for key, inputs in self.order:
                values[key] = self.blocks[key](*(values[i] for i in inputs))
            return values[key]

    return Twin()


def _torch(graph, kind: str, batch: int):
    import torch

    torch.set_num_threads(2)
    model = torch_model(graph)
    x = torch.randn(batch, 3, SIZE, SIZE)
    if kind == "inference":
        model.eval()

        def infer():
            with torch.inference_mode():
                model(x)
        return infer
    labels = torch.randint(0, 1000, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    return step


def _onnxruntime(graph, batch: int):
    """Inference through onnxruntime on the torch twin exported to ONNX (2 intra-op threads)."""
    import io

    import onnxruntime
    import torch

    model = torch_model(graph).eval()
    x = torch.randn(batch, 3, SIZE, SIZE)
    exported = io.BytesIO()
    torch.onnx.export(model, (x,), exported, dynamo=False, input_names=["x"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    # Its idle threads would otherwise spin and steal the cores from the frameworks timed next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(exported.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_workloads(repeats: int = 5, with_torch: bool = True, workloads=WORKLOADS,
                  with_onnxruntime: bool = False) -> list[dict]:
    """Median seconds of each workload for npmobilenet, torch and (inference only) onnxruntime,
    alternating between them."""
    rows = []
    for arch, kind, batch in workloads:
        ours, graph = _ours(arch, kind, batch)
        frameworks = {"npmobilenet": ours}
        if with_torch:
            frameworks["torch"] = _torch(graph, kind, batch)
        if with_onnxruntime and with_torch and kind == "inference":
            frameworks["onnxruntime"] = _onnxruntime(graph, batch)
        for fn in frameworks.values():
            fn()  # warm-up: Numba compilation, allocator, torch's first-call costs
        times = {name: [] for name in frameworks}
        for _ in range(repeats):
            for name, fn in frameworks.items():
                times[name].append(_time(fn))
        macs = sum(node.macs for node in graph.nodes) * batch
        flops = 2 * macs * (3 if kind == "train step" else 1)
        rows.append({"arch": arch, "kind": kind, "batch": batch, "gflop": flops / 1e9,
                     **{name: statistics.median(t) for name, t in times.items()}})
    return rows


_CHILD = """
from npmobilenet.benchmark import {entry}
{entry}({args})
"""


def _child(entry: str, args: str, env: dict | None = None) -> str:
    code = _CHILD.format(entry=entry, args=args)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout.strip()


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc (VmHWM, unlike ru_maxrss, is not inherited
    across exec, so each subprocess measures only itself)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def peak_rss_child(framework: str, arch: str) -> None:
    """In a fresh process: two training steps at batch 16; print the RSS after imports and the
    peak RSS, in MiB. (Both processes import numpy and npmobilenet, which builds the graph.)"""
    if framework == "torch":
        import torch  # noqa: F401  (counted in the baseline, as npmobilenet's imports are)
    baseline = _status_mib("VmRSS")
    if framework == "npmobilenet":
        step, _ = _ours(arch, "train step", 16)
    else:
        step = _torch(build_model(arch).graph, "train step", 16)
    step()
    step()
    print(baseline, _status_mib("VmHWM"))


def first_inference_child() -> None:
    """In a fresh process: import, build v2, run one inference; print seconds since start."""
    start = time.perf_counter()
    step, _ = _ours("mobilenet_v2", "inference", 1)
    step()
    print(time.perf_counter() - start)


def start_up_times() -> tuple[float, float]:
    """(cold, warm) wall seconds to the first v2 inference in a new process: the first with an
    empty Numba cache, the second reusing what the first compiled."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            _child("first_inference_child", "", env)
            timings.append(time.perf_counter() - start)
    return timings[0], timings[1]


def report(repeats: int = 5, memory: bool = True, start_up: bool = True) -> str:
    """Run everything and format the comparison table."""
    has_torch = _available("torch")
    has_ort = has_torch and _available("onnxruntime") and _available("onnx")
    lines = [f"npmobilenet bench: {SIZE}x{SIZE} float32, 2 threads, median of {repeats} (alternating)",
             f"{'workload':34s} {'ms':>9s} {'images/s':>9s} {'GFLOP/s':>8s}"
             + (f" {'torch ms':>9s} {'ratio':>6s}" if has_torch else "")
             + (f" {'ort ms':>8s} {'ratio':>6s}" if has_ort else "")]
    for row in run_workloads(repeats, has_torch, with_onnxruntime=has_ort):
        ours = row["npmobilenet"]
        name = f"{row['arch']} {row['kind']}, batch {row['batch']}"
        line = f"{name:34s} {1e3 * ours:9.1f} {row['batch'] / ours:9.1f} {row['gflop'] / ours:8.1f}"
        if has_torch:
            line += f" {1e3 * row['torch']:9.1f} {ours / row['torch']:6.2f}"
        if "onnxruntime" in row:
            line += f" {1e3 * row['onnxruntime']:8.1f} {ours / row['onnxruntime']:6.2f}"
        lines.append(line)
    if not has_torch:
        lines.append("(torch is not installed: no reference timings)")
    elif not has_ort:
        lines.append("(onnxruntime and onnx are not installed: no onnxruntime column)")
    if memory:
        for framework in ("npmobilenet", "torch") if has_torch else ("npmobilenet",):
            baseline, peak = map(float, _child("peak_rss_child", f"{framework!r}, 'mobilenet_v2'").split())
            lines.append(f"peak RSS, mobilenet_v2 train step batch 16, {framework}: {peak:.0f} MiB "
                         f"({baseline:.0f} MiB after imports)")
    if start_up:
        cold, warm = start_up_times()
        lines.append(f"time to first mobilenet_v2 inference in a new process: cold {cold:.1f} s "
                     f"(empty Numba cache), warm {warm:.1f} s")
    return "\n".join(lines)
