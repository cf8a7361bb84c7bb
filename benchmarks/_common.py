"""What the benchmark scripts share: naming the CPU that gave their figures."""
import os
import platform

__all__ = ["cpu_name"]


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
