"""What the benchmark scripts share: naming the CPU that gave their figures."""
import platform

__all__ = ["cpu_name"]


def cpu_name():
    """The CPU's model name from ``/proc/cpuinfo`` (or the platform's)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
