"""``npmobilenet bench``: npmobilenet against PyTorch and onnxruntime, each in its own process.

Every framework runs in a worker process of its own (:func:`serve`), so no framework's thread
pool, allocator or caches are shared with another's. The workers take turns: in each of
``ROUNDS`` rounds every framework, after a pause in which the last one's idle threads stop
spinning, runs one untimed call (its thread pool wakes up) and then ``repeats`` timed calls
back to back, its steady state; medians over the rounds and the ratios
between them are measured in the same run. (Calls taken one at a time with pauses between would
time waking idle threads instead: on this project's 2-core virtual machines a v1 inference took
7.5 ms back to back and 13-65 ms after a 1-200 ms pause.) Workloads are float32, 2 threads:

- the table: v1, v2, v3-large and v4-conv-small inference at batch 1 and 8 and a training step
  (forward, backward, SGD update) at batch 16, at 224x224, with the training step's distance
  from its FLOP floor (forward + backward FLOPs at the SGEMM rate measured in the same run);
- scaling: v2 inference images/s over batch 1, 8, 32, 64 (224x224) and input 96, 160, 224, 320
  (batch 8), and what an image-pixel costs, which is constant where cost is linear;
- memory: the peak resident memory a v2 training step at batch 16 and a v2 inference at batch 8
  add to a fresh worker, against torch's and onnxruntime's;
- start-up: a whole ``npmobilenet predict`` of one image in a new process (import included)
  against the same in a new process with onnxruntime, and the time to the first inference with
  an empty Numba cache.

``under_load`` runs a busy Python process beside the timings, as a shared machine would.
torch, onnx and onnxruntime (the ``bench`` extra) are imported only in their workers; the
onnxruntime worker runs the graph npmobilenet's exporter writes (NCHW, as people feed it).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from .runtime import openblas_core

SIZE = 224
FRAMEWORKS = ("npmobilenet", "torch", "onnxruntime")
ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v4_conv_small")
TABLE = [(arch, kind, batch, SIZE) for arch in ARCHS
         for kind, batch in (("inference", 1), ("inference", 8), ("train step", 16))]
SCALING = ([("mobilenet_v2", "inference", batch, SIZE) for batch in (1, 8, 32, 64)]
           + [("mobilenet_v2", "inference", 8, size) for size in (96, 160, 320)])
THREADS = 2
ROUNDS = 3
SETTLE = 0.3  # seconds before each turn: the last worker's idle threads stop spinning


# --- inside a worker process -------------------------------------------------------------

def _graph(arch: str, size: int):
    from .architecture import build_graph

    return build_graph(arch, input_size=size)


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


def _ours(arch: str, kind: str, batch: int, size: int):
    from . import functional as F
    from .autograd import no_grad
    from .model import build_model
    from .optim import SGD

    model = build_model(arch, input_size=size, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    if kind == "inference":
        model.eval()

        def infer():
            with no_grad():
                model(x, end_points=())  # the output alone, as the other frameworks return
        return infer
    labels = rng.integers(0, 1000, batch)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x, end_points=()), labels).backward()
        optimizer.step()
    return step


def _torch(arch: str, kind: str, batch: int, size: int):
    import torch

    torch.set_num_threads(THREADS)
    model = torch_model(_graph(arch, size))
    x = torch.randn(batch, 3, size, size)
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


def onnx_session(path_or_bytes):
    """An onnxruntime CPU session with the benchmark's threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    return onnxruntime.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def _onnxruntime(arch: str, kind: str, batch: int, size: int):
    if kind != "inference":
        return None
    from .export.onnx import to_onnx
    from .model import build_model

    model = build_model(arch, input_size=size, seed=0).eval()
    session = onnx_session(to_onnx(model, layout="nchw").SerializeToString())
    feed = {"input": np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)}
    return lambda: session.run(None, feed)


def _sgemm():
    """A 2048x2048x2048 float32 matrix product: the machine's GEMM rate, the FLOP floor's unit."""
    a, b = (np.random.default_rng(i).random((2048, 2048), dtype=np.float32) for i in range(2))
    out = np.empty_like(a)
    return lambda: np.matmul(a, b, out=out)


SETUPS = {"npmobilenet": _ours, "torch": _torch, "onnxruntime": _onnxruntime}


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc (VmHWM, unlike ru_maxrss, is not inherited
    across exec, so each worker measures only itself)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def serve() -> None:
    """A worker: read JSON requests from stdin, answer one JSON line each on the original
    stdout (libraries' own prints go to stderr). Requests: ``{"import": framework}``,
    ``{"setup": [framework, arch, kind, batch, size]}`` or ``{"setup": "sgemm"}`` (answers
    whether the workload exists; two untimed calls follow unless ``"warm": false``),
    ``{"run": n}`` (answers the n call times), ``{"memory": 1}`` (RSS now and peak, MiB)."""
    from .runtime import reuse_freed_memory

    reuse_freed_memory()  # as the command line runs
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    work = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "import" in request:
                if request["import"] != "npmobilenet":
                    __import__({"onnxruntime": "onnxruntime", "torch": "torch"}[request["import"]])
                answer = {"rss": _status_mib("VmRSS")}
            elif "setup" in request:
                setup = request["setup"]
                work = _sgemm() if setup == "sgemm" else SETUPS[setup[0]](*setup[1:])
                if work is not None and request.get("warm", True):
                    work()  # warm-up: Numba compilation, allocator, first-call costs
                    work()
                answer = {"ready": work is not None}
            elif "run" in request:
                times = []
                for _ in range(request["run"]):
                    start = time.perf_counter()
                    work()
                    times.append(time.perf_counter() - start)
                answer = {"seconds": times}
            else:
                answer = {"rss": _status_mib("VmRSS"), "peak": _status_mib("VmHWM")}
        except Exception as error:  # noqa: BLE001 -- reported to the parent, which raises it
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


# --- in the parent ------------------------------------------------------------------------

class Worker:
    """One framework's worker process."""

    def __init__(self, framework: str):
        self.framework = framework
        env = {**os.environ, "NUMBA_NUM_THREADS": str(THREADS)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from npmobilenet.benchmark import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.baseline = self.ask({"import": framework})["rss"]

    def ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.framework} benchmark worker died (exit code {self.process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.framework} benchmark worker: {answer['error']}")
        return answer

    def setup(self, workload, warm: bool = True) -> bool:
        return self.ask({"setup": workload if workload == "sgemm" else [self.framework, *workload],
                         "warm": warm})["ready"]

    def time_block(self, calls: int) -> list[float]:
        """``calls`` timed calls back to back, after a pause and an untimed call."""
        time.sleep(SETTLE)
        return self.ask({"run": calls + 1})["seconds"][1:]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def installed_frameworks() -> list[str]:
    """npmobilenet, and torch and onnxruntime where installed."""
    found = ["npmobilenet"]
    if available("torch"):
        found.append("torch")
    if available("onnxruntime") and available("onnx"):
        found.append("onnxruntime")
    return found


@contextlib.contextmanager
def workers(frameworks):
    started = {}
    try:
        for framework in frameworks:
            started[framework] = Worker(framework)
        yield started
    finally:
        for worker in started.values():
            worker.close()


@contextlib.contextmanager
def busy_process(active: bool):
    """A process spinning on one core while the block runs (when ``active``)."""
    if not active:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def time_workloads(workloads, repeats: int = 5, frameworks=None) -> list[dict]:
    """Median seconds of each workload per framework (None where a framework lacks it), timed
    in ``ROUNDS`` turns of ``repeats`` calls."""
    frameworks = frameworks or installed_frameworks()
    rows = []
    with workers(frameworks) as pool:
        for workload in workloads:
            ready = [w for w in pool.values() if w.setup(workload)]
            times = {w.framework: [] for w in ready}
            for _ in range(ROUNDS):
                for worker in ready:
                    times[worker.framework] += worker.time_block(repeats)
            arch, kind, batch, size = workload
            graph = _graph(arch, size)
            flops = 2 * sum(node.macs for node in graph.nodes) * batch * (3 if kind == "train step" else 1)
            rows.append({"arch": arch, "kind": kind, "batch": batch, "size": size, "gflop": flops / 1e9,
                         **{f: statistics.median(times[f]) if f in times else None for f in frameworks}})
    return rows


def sgemm_gflops(repeats: int = 5) -> float:
    with workers(["npmobilenet"]) as pool:
        worker = pool["npmobilenet"]
        worker.setup("sgemm")
        seconds = statistics.median(worker.time_block(repeats))
    return 2 * 2048 ** 3 / seconds / 1e9


def peak_memory(framework: str, workload) -> tuple[float, float]:
    """(MiB after imports, MiB of peak resident memory) of a fresh worker running ``workload``."""
    with workers([framework]) as pool:
        worker = pool[framework]
        worker.setup(workload)
        worker.ask({"run": 1})
        return worker.baseline, worker.ask({"memory": 1})["peak"]


def first_calls(framework: str, workload, calls: int = 2) -> list[float]:
    """Seconds of the first ``calls`` calls of ``workload`` in a new worker, with no warm-up
    (imports and building the model done, untimed): what one step costs a fresh process."""
    with workers([framework]) as pool:
        worker = pool[framework]
        worker.setup(workload, warm=False)
        return worker.ask({"run": calls})["seconds"]


ORT_PREDICT = """
import sys
import numpy as np
import onnxruntime
from PIL import Image
image = Image.open(sys.argv[2]).convert("RGB")
width, height = image.size
scale = 256 / min(width, height)
image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
left, top = (image.width - 224) // 2, (image.height - 224) // 2
x = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255
x = ((x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(2, 0, 1)[None]
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 2
session = onnxruntime.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
logits = session.run(None, {"input": x})[0][0]
for index in np.argsort(-logits)[:5]:
    print(index, logits[index])
"""


def fresh_process_predict(repeats: int = 3, with_onnxruntime: bool = True) -> dict[str, float]:
    """Median wall seconds of one image classified by a new process, end to end: ``npmobilenet
    predict`` on a v2 model file, and a minimal onnxruntime script on the same model exported
    (the same preprocessing); each run once first, so both find their files in the page cache
    and npmobilenet its compiled kernels in the Numba cache."""
    from PIL import Image

    from .export.onnx import export_onnx
    from .io import save
    from .io.preprocess import preset
    from .model import build_model

    with tempfile.TemporaryDirectory() as folder:
        model = build_model("mobilenet_v2", seed=0).eval()
        model.preprocess = preset("torchvision")  # as a converted torchvision file has
        weights, graph, image = (os.path.join(folder, name) for name in ("v2.safetensors", "v2.onnx", "cat.jpg"))
        save(model, weights)
        pixels = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image, quality=90)
        commands = {"npmobilenet": [sys.executable, "-m", "npmobilenet.cli", "predict", "--weights", weights, image]}
        if with_onnxruntime:
            export_onnx(model, graph)
            commands["onnxruntime"] = [sys.executable, "-c", ORT_PREDICT, graph, image]
        times = {name: [] for name in commands}
        for round_ in range(repeats + 1):
            for name, command in commands.items():
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, timeout=600)
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def first_inference_child() -> None:
    """In a fresh process: import, build v2, run one inference; print seconds since start."""
    start = time.perf_counter()
    _ours("mobilenet_v2", "inference", 1, SIZE)()
    print(time.perf_counter() - start)


def cold_start() -> float:
    """Wall seconds to the first v2 inference in a new process with an empty Numba cache."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from npmobilenet.benchmark import first_inference_child; "
                        "first_inference_child()"], check=True, capture_output=True, timeout=900,
                       env={**os.environ, "NUMBA_CACHE_DIR": cache})
        return time.perf_counter() - start


# --- the report ----------------------------------------------------------------------------

def _ratio(ours, theirs) -> str:
    return f"{ours / theirs:6.2f}" if ours is not None and theirs is not None else f"{'-':>6s}"


def _ms(seconds) -> str:
    return f"{1e3 * seconds:9.1f}" if seconds is not None else f"{'-':>9s}"


def format_table(rows, frameworks, floor_gflops: float | None = None) -> list[str]:
    """One line per workload: our time, throughput, each other framework's time and our ratio
    to it; given the SGEMM rate, the FLOP floor (the workload's FLOPs at that rate) and our
    time as a multiple of it."""
    others = [f for f in frameworks if f != "npmobilenet"]
    header = f"{'workload':38s} {'ms':>9s} {'images/s':>9s} {'GFLOP/s':>8s}"
    header += "".join(f" {f[:5] + ' ms':>9s} {'ratio':>6s}" for f in others)
    if floor_gflops:
        header += f" {'floor ms':>9s} {'x floor':>8s}"
    lines = [header]
    for row in rows:
        ours = row["npmobilenet"]
        name = f"{row['arch']} {row['kind']}, {row['batch']}x{row['size']}"
        line = f"{name:38s} {_ms(ours)} {row['batch'] / ours:9.1f} {row['gflop'] / ours:8.1f}"
        line += "".join(f" {_ms(row[f])} {_ratio(ours, row[f])}" for f in others)
        if floor_gflops:
            floor = row["gflop"] / floor_gflops
            line += f" {_ms(floor)} {ours / floor:8.2f}"
        lines.append(line)
    return lines


def below_floor(rows, floor_gflops: float) -> list[str]:
    """The workloads another framework runs in less time than the FLOP floor: no code whose
    arithmetic runs at numpy's SGEMM rate can match them (see docs/performance.md)."""
    found = []
    for row in rows:
        floor = row["gflop"] / floor_gflops
        for framework in FRAMEWORKS[1:]:
            if row.get(framework) is not None and row[framework] < floor:
                found.append(f"{row['arch']} {row['kind']} {row['batch']}x{row['size']}: "
                             f"{framework} {1e3 * row[framework]:.1f} ms < floor {1e3 * floor:.1f} ms")
    return found


def format_scaling(rows, frameworks) -> list[str]:
    """images/s per framework, and npmobilenet's nanoseconds per image-pixel."""
    lines = [f"{'v2 inference':18s}" + "".join(f" {f[:11] + ' img/s':>17s}" for f in frameworks)
             + f" {'ns per image-pixel':>19s}"]
    for row in rows:
        pixels = row["batch"] * row["size"] ** 2
        lines.append(f"{'batch %d, %d' % (row['batch'], row['size']):18s}"
                     + "".join(f" {row['batch'] / row[f]:17.1f}" for f in frameworks)
                     + f" {1e9 * row['npmobilenet'] / pixels:19.2f}")
    return lines


def report(repeats: int = 5, memory: bool = True, start_up: bool = True, scaling: bool = True,
           under_load: bool = False, workloads=TABLE) -> str:
    """Run everything asked for and format it."""
    frameworks = installed_frameworks()
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    lines = [f"npmobilenet bench: float32, {THREADS} threads, each framework in its own process, "
             f"median of {ROUNDS} turns of {repeats} calls"
             + (", with one busy process competing for the cores" if under_load else ""),
             f"numpy's OpenBLAS runs its {openblas_core() or 'unknown'} kernels"
             + (f" (OPENBLAS_CORETYPE={coretype})" if coretype else "")]
    missing = [f for f in FRAMEWORKS if f not in frameworks]
    if missing:
        lines.append(f"({', '.join(missing)} not installed: pip install 'npmobilenet[bench]' for their columns)")
    with busy_process(under_load):
        floor = sgemm_gflops(repeats)
        lines.append(f"SGEMM 2048^3: {floor:.0f} GFLOP/s (the FLOP floor's rate)")
        rows = time_workloads(workloads, repeats, frameworks)
        lines += format_table(rows, frameworks, floor)
        faster = below_floor(rows, floor)
        if faster:
            lines.append("faster than the FLOP floor at numpy's SGEMM rate: " + "; ".join(faster))
        if scaling:
            rows = time_workloads(SCALING, repeats, frameworks)
            lines += ["", "scaling (cost is linear in batch x pixels where ns per image-pixel is constant)"]
            lines += format_scaling(sorted(rows, key=lambda r: (r["size"] != SIZE, r["size"], r["batch"])),
                                    frameworks)
        if memory:
            lines.append("")
            for label, workload, other in (("v2 train step, 16x224", ("mobilenet_v2", "train step", 16, SIZE), "torch"),
                                           ("v2 inference, 8x224", ("mobilenet_v2", "inference", 8, SIZE), "onnxruntime")):
                figures = {f: peak_memory(f, workload) for f in ("npmobilenet", other) if f in frameworks}
                for framework, (baseline, peak) in figures.items():
                    lines.append(f"peak RSS, {label}, {framework}: {peak:.0f} MiB, "
                                 f"{peak - baseline:.0f} MiB above the {baseline:.0f} MiB after imports")
                if len(figures) == 2:
                    (b0, p0), (b1, p1) = figures.values()
                    lines.append(f"  ratio of the memory the workload adds: {(p0 - b0) / (p1 - b1):.2f}")
        if start_up:
            lines.append("")
            for arch in ("mobilenet_v1", "mobilenet_v2"):
                workload = (arch, "train step", 16, SIZE)
                steps = {f: first_calls(f, workload) for f in ("npmobilenet", "torch") if f in frameworks}
                line = f"{arch} train step 16x{SIZE} in a new process, first / second call: " + ", ".join(
                    f"{f} {1e3 * first:.0f} / {1e3 * second:.0f} ms" for f, (first, second) in steps.items())
                if len(steps) == 2:
                    line += f", ratio of first calls {steps['npmobilenet'][0] / steps['torch'][0]:.2f}"
                lines.append(line)
            seconds = fresh_process_predict(with_onnxruntime="onnxruntime" in frameworks)
            ours = seconds["npmobilenet"]
            line = f"\none image in a new process (predict, import included): {ours:.2f} s"
            if "onnxruntime" in seconds:
                line += f", onnxruntime {seconds['onnxruntime']:.2f} s, ratio {ours / seconds['onnxruntime']:.2f}"
            lines.append(line)
            lines.append(f"first v2 inference in a new process with an empty Numba cache: {cold_start():.1f} s")
    return "\n".join(lines)
