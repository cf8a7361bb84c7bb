"""Where a step's time goes: bertkit's encoder step under TensorFlow's profiler, per op type.

Builds the step that ``bench_model.py`` times (inference of the encoder, or one
fine-tuning step of a ``[CLS]`` classifier), warms it up, times it, then runs it again
under ``tf.profiler`` and sums the host-side duration of every executed TensorFlow op by
its type: ``_MklNativeFusedMatMul`` (a matmul with its bias add and, at inference, its
activation fused in), ``_MklLayerNorm``, ``_MklFusedBatchMatMulV2`` (attention scores with
the mask bias), ``Cast``, ``Mul``, ... The op names are those of the graph TensorFlow ran
after its rewrites, so the table also shows which fusions happened.

With two inter-op threads TensorFlow runs independent ops side by side, so op times can
add up to more than the wall time (and each one is slower for sharing the cores);
``--inter-op 1`` runs them one after another, and the op times then add up to the step.

    python benchmarks/profile_step.py                                  # base, infer, bf16
    python benchmarks/profile_step.py --shape small --workload train --policy float32
    python benchmarks/profile_step.py --inter-op 1 --top 12
"""
import argparse
import collections
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # this checkout's bertkit, not an installed one

import bertkit  # noqa: E402,F401  (first, as a user's script: it turns on oneDNN's kernels)
import bench_model  # noqa: E402  (the same model shapes and steps)
from _common import cpu_name  # noqa: E402

# Events of the executor and the profiler's own bookkeeping, not ops.
NOT_OPS = {"Process", "Run", "StartRegion", "StopRegion", "Record"}


def op_times(logdir, steps, by="type"):
    """``{key: (milliseconds per step, ops per step, {op name: ms})}`` from the
    profiler's XSpace file under ``logdir``; ``key`` is the op's type, or with
    ``by='scope'`` the first component of its name (the model, the optimizer, ...)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise SystemExit(f"the profiler wrote no .xplane.pb under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(paths[0]).read_bytes())
    total, count = collections.Counter(), collections.Counter()
    by_name = collections.defaultdict(collections.Counter)
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith("$"):
                    continue
                op_name, op_type = name.rsplit(":", 1)
                if op_type in NOT_OPS or op_type.startswith(" "):
                    continue
                if by == "scope":
                    op_name, op_type = op_type, op_name.split("/")[0]
                ms = event.duration_ps / 1e9 / steps
                total[op_type] += ms
                count[op_type] += 1
                by_name[op_type][op_name.split("/")[-1]] += ms
    return {op: (ms, count[op] / steps, by_name[op]) for op, ms in total.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="base", choices=sorted(bench_model.SHAPES))
    parser.add_argument("--workload", default="infer", choices=["infer", "train"])
    parser.add_argument("--policy", default="mixed_bfloat16",
                        help="Keras dtype policy: float32, mixed_bfloat16 or bfloat16")
    parser.add_argument("--steps", type=int, default=5, help="steps timed, and profiled")
    parser.add_argument("--inter-op", type=int, default=None,
                        help="TensorFlow's inter-op threads (default: its own choice)")
    parser.add_argument("--top", type=int, default=20, help="op types listed")
    parser.add_argument("--by", default="type", choices=["type", "scope"],
                        help="sum by op type, or by the first component of the op's name")
    args = parser.parse_args(argv)

    import tensorflow as tf

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    shape = bench_model.SHAPES[args.shape]
    step = bench_model.keras_step("bertkit", False, args.policy, shape, args.workload)
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    logdir = tempfile.mkdtemp(prefix="profile_step_")
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        step()
    tf.profiler.experimental.stop()
    times = op_times(logdir, args.steps, args.by)

    useful = bench_model.flops(bench_model.workload_matmuls(shape, args.workload)) / 1e9
    print(f"{cpu_name()}, {os.cpu_count()} cores, "
          f"{bench_model.describe_bf16_support()}")
    print(f"{args.shape} {args.workload} {args.policy}, batch {shape['batch']} x "
          f"{shape['seq']}: {seconds * 1e3:.1f} ms a step, {shape['batch'] / seconds:.2f} seq/s, "
          f"{useful / seconds:.0f} GFLOP/s of matmul work")
    summed = sum(ms for ms, _, _ in times.values())
    print(f"op time {summed:.1f} ms a step (ops running side by side each count)\n")
    print(f"| {'op ' + args.by:<28} | {'ms/step':>8} | {'share':>6} | {'ops':>5} | largest |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 8}|{'-' * 7}|---------|")
    for op, (ms, per_step, names) in sorted(times.items(), key=lambda kv: -kv[1][0])[:args.top]:
        largest = ", ".join(f"{name} {t:.1f}" for name, t in names.most_common(2))
        print(f"| {op:<28} | {ms:>8.1f} | {ms / summed:>6.1%} | {per_step:>5.0f} | {largest} |")


if __name__ == "__main__":
    main()
