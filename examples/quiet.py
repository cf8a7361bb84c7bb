"""Imports bertkit, and with it TensorFlow, with TensorFlow's native start-up log silenced;
the examples import this first.

When its C++ libraries load, TensorFlow writes a oneDNN notice, CUDA probing ("Could not
find cuda drivers") and CPU-feature lines to stderr, before anything of the example's.
``TF_CPP_MIN_LOG_LEVEL`` silences TensorFlow's own logging, but the absl lines written
before logging is set up go to the stderr file descriptor directly, so the import runs
with that descriptor pointed at ``/dev/null`` (Python's own errors are raised after it is
restored, and shown). ``--verbose`` on the command line keeps everything. bertkit is
imported before TensorFlow so that it can turn on TensorFlow's oneDNN kernels on the CPUs
where TensorFlow's own default leaves them off (``bertkit._onednn``).
"""
import os
import sys


def import_bertkit_quietly(argv=None):
    """Imports bertkit (and TensorFlow), silently unless ``--verbose`` is in ``argv``;
    nothing if TensorFlow is loaded already."""
    argv = sys.argv if argv is None else argv
    if "tensorflow" in sys.modules:
        return
    if "--verbose" in argv:
        import bertkit  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import bertkit  # noqa: F401  (it imports TensorFlow)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


import_bertkit_quietly()
