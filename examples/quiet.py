"""Imports TensorFlow with its native start-up log silenced; the examples import it first.

When its C++ libraries load, TensorFlow writes a oneDNN notice, CUDA probing ("Could not
find cuda drivers") and CPU-feature lines to stderr, before anything of the example's.
``TF_CPP_MIN_LOG_LEVEL`` silences TensorFlow's own logging, but the absl lines written
before logging is set up go to the stderr file descriptor directly, so the import runs
with that descriptor pointed at ``/dev/null`` (Python's own errors are raised after it is
restored, and shown). ``--verbose`` on the command line keeps everything.
"""
import os
import sys


def import_tensorflow_quietly(argv=None):
    """Imports TensorFlow silently unless ``--verbose`` is in ``argv`` or it is loaded."""
    argv = sys.argv if argv is None else argv
    if "--verbose" in argv or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


import_tensorflow_quietly()
