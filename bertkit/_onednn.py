"""TensorFlow's oneDNN kernels: turned on for every x86 CPU before TensorFlow loads, and
what they can run on this one.

TensorFlow's Linux x86 packages run their oneDNN kernels and graph rewrites by default
only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on the others (AMD's Zen 3 and older,
Intel's before Cascade Lake) they run Eigen's kernels, and none of the fusions that
:mod:`bertkit._fused` writes its layers for happens: the layer norm stays a batch norm
and a multiply-add, GELU five elementwise ops, the attention mask a separate add. On an
AMD EPYC (Zen 3, AVX2 only) bertkit's float32 BERT-base ran 1.30x faster with them at
inference and 1.91x in fine-tuning, the small model 1.38x and 1.25x (benchmarks/README.md).

TensorFlow reads its switch, ``TF_ENABLE_ONEDNN_OPTS``, once, when it loads. Importing
bertkit before TensorFlow therefore turns the kernels on (``import bertkit`` does it
before it imports Keras); a value the user set is kept (``TF_ENABLE_ONEDNN_OPTS=0`` keeps
Eigen's kernels), and on CPUs where TensorFlow turns them on itself nothing changes.

bfloat16 is another matter: oneDNN runs it only on CPUs with AVX-512 (elsewhere TensorFlow
falls back to Eigen's bfloat16 kernels), and it is faster than float32 only with bfloat16
matmul units (``avx512_bf16``, ``amx_bf16``). On the AVX2-only EPYC, bertkit's
``mixed_bfloat16`` steps ran at 0.48-0.65x its float32 ones.
"""
import os
import platform
import sys
import warnings

__all__ = ["enable_before_tensorflow_loads", "onednn_enabled", "onednn_runs_bfloat16",
           "bfloat16_units", "cpu_flags", "is_x86"]

SWITCH = "TF_ENABLE_ONEDNN_OPTS"
BFLOAT16_UNITS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of bf16 matmul units

IMPORTED_TOO_LATE = (
    "TensorFlow was imported before bertkit with its oneDNN kernels off (its default on "
    "x86 CPUs without AVX512_VNNI, AVX512_BF16 or AMX), so bertkit's layers run on Eigen's "
    "kernels, unfused (BERT ran 1.3-1.9x slower on an AVX2 EPYC). Import bertkit before "
    "TensorFlow (or Keras), or set TF_ENABLE_ONEDNN_OPTS=1 before starting Python; "
    "TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen's kernels and silences this warning.")


def is_x86():
    """Whether this is an x86 CPU, the only kind whose TensorFlow has oneDNN kernels."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def enable_before_tensorflow_loads():
    """Sets ``TF_ENABLE_ONEDNN_OPTS=1`` if TensorFlow is not loaded yet, the CPU is x86 and
    the user has not chosen; returns whether it set it. Once TensorFlow is loaded with the
    kernels off by its own default, warns instead (see the module's docstring)."""
    if not is_x86() or SWITCH in os.environ:
        return False
    if "tensorflow" not in sys.modules:
        os.environ[SWITCH] = "1"
        return True
    if not onednn_enabled():
        warnings.warn(IMPORTED_TOO_LATE, RuntimeWarning, stacklevel=3)
    return False


def onednn_enabled():
    """Whether the loaded TensorFlow runs its oneDNN kernels and rewrites (it decides once,
    when it loads); False when TensorFlow is not loaded or not a oneDNN build."""
    if "tensorflow" not in sys.modules:
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the query: assume its own default
        return True
    return bool(_pywrap_util_port.IsMklEnabled())


def cpu_flags():
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them; empty where there is no
    such file (not Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bfloat16_units():
    """The CPU's bfloat16 matmul units, as ``/proc/cpuinfo`` names them (``avx512_bf16``,
    ``amx_bf16``): without them a ``mixed_bfloat16`` model runs slower than in float32.
    Empty when there are none or the flags cannot be read."""
    flags = cpu_flags()
    return [unit for unit in BFLOAT16_UNITS if unit in flags]


def onednn_runs_bfloat16():
    """Whether TensorFlow's bfloat16 ops run on oneDNN's kernels here: the kernels must be
    on, and TensorFlow gives them bfloat16 only on a CPU with AVX-512."""
    return onednn_enabled() and "avx512f" in cpu_flags()
