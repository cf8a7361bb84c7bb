"""What the benchmark scripts share: naming the CPU that gave their figures, and its
feature flags."""
import os
import platform

__all__ = ["cpu_flags", "cpu_name"]


def cpu_name():
    """The CPU's model name from ``/proc/cpuinfo`` (or the platform's), and the
    instruction-set cap when ``ONEDNN_MAX_CPU_ISA`` limits what oneDNN may use.

    TensorFlow's and PyTorch's oneDNN both honour that variable, so a run with
    ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` on a CPU with AMX stands in for a CPU with
    avx512_bf16 and no AMX (the same cores and caches, so an indication only); its figures
    must say so.
    """
    name = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{name} (oneDNN capped at {cap} by ONEDNN_MAX_CPU_ISA)" if cap else name


def cpu_flags():
    """The CPU's feature flags in ``/proc/cpuinfo`` (empty where there is no such file).
    The benchmarks' drivers read them here rather than from ``bertkit._onednn``, whose
    import would load TensorFlow in a process that only starts workers."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
