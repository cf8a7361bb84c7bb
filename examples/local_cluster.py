"""Run a command as N workers of a multi-worker cluster on this machine (loopback ports).

Each worker is the same command with its own ``TF_CONFIG`` (the cluster on
``127.0.0.1`` at free ports, and its task index); worker 0 is the chief. Their output
comes through with a ``[worker i]`` prefix. When one worker fails, the others are
stopped; the exit code is the first failure's (0 when all succeed).

    python examples/local_cluster.py --workers 2 -- \\
        python examples/task_sentiment_classification.py --distribute multiworker

``--threads-per-worker`` caps each worker's TensorFlow threads (``TF_NUM_INTRAOP_THREADS``
and ``TF_NUM_INTEROP_THREADS``), so that the workers share the cores instead of fighting
over them. On several machines, set ``TF_CONFIG`` on each by hand instead (see the README).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count):
    """``count`` TCP ports free on 127.0.0.1 now (bound, read and released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_environments(workers, threads=None, environ=None):
    """One environment a worker: ``TF_CONFIG`` for the loopback cluster (and the thread
    caps when ``threads`` is given)."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    environments = []
    for index in range(workers):
        env = dict(os.environ if environ is None else environ)
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                       "task": {"type": "worker", "index": index}})
        if threads:
            env["TF_NUM_INTRAOP_THREADS"] = env["TF_NUM_INTEROP_THREADS"] = str(threads)
        environments.append(env)
    return environments


def relay(stream, prefix, out):
    for line in iter(stream.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()


def run_workers(command, workers, threads=None):
    """Runs ``command`` as ``workers`` workers; returns their exit codes."""
    processes, relays = [], []
    for index, env in enumerate(worker_environments(workers, threads)):
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        processes.append(process)
        relay_thread = threading.Thread(target=relay, args=(process.stdout, f"[worker {index}] ",
                                                            sys.stdout), daemon=True)
        relay_thread.start()
        relays.append(relay_thread)
    try:
        while any(p.poll() is None for p in processes):
            if any(p.poll() not in (None, 0) for p in processes):
                time.sleep(15)  # the others notice the failure by themselves first
                for p in processes:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:  # Ctrl-C reaches every worker of the process group too
        pass
    codes = [p.wait() for p in processes]
    for relay_thread in relays:
        relay_thread.join(timeout=5)
    return codes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: local_cluster.py [--workers N] [--threads-per-worker T] -- COMMAND ...",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=None, metavar="T")
    args = p.parse_args(argv[:split])
    command = argv[split + 1:]
    if args.workers < 1 or not command:
        p.error("give --workers >= 1 and a command after --")
    codes = run_workers(command, args.workers, args.threads_per_worker)
    print(f"worker exit codes: {codes}")
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
