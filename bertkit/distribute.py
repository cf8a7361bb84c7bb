"""Training on several devices or machines with TensorFlow's distribution strategies.

This module owns what a training script needs to run the same way on one device,
several local devices (``MirroredStrategy``) or several machines
(``MultiWorkerMirroredStrategy``, the cluster read from ``TF_CONFIG``):

- :func:`make_strategy` turns ``none | mirrored | multiworker`` into a strategy, with
  ``TF_CONFIG`` checked before any work and a bounded time for collectives, so that a
  dead worker makes the others stop with an error instead of waiting for ever;
- :func:`distribute_batches` splits each *global* batch of a ``tf.data`` pipeline
  into equal per-replica slices: every worker builds the same batches from the same
  seed and keeps its replicas' slices, so no example is seen twice in an epoch and a
  step's update is that of the global batch, as on one device;
- :func:`is_chief`: only the chief writes files;
- :func:`predict_on_batch`: inference on one whole batch on every worker. Keras's
  ``model.predict_on_batch`` under a multi-worker strategy hands the batch to every
  replica and concatenates the replicas' outputs across workers, so a score computed
  from it is wrong; this calls the model directly.

Build the model, load the checkpoint and compile inside ``strategy.scope()``:

```python
strategy = make_strategy("multiworker")
with strategy.scope():
    model = build_transformer_model(config, checkpoint)
    model.compile(optimizer=..., loss=...)
model.fit(distribute_batches(strategy, generator.to_dataset(...)),
          steps_per_epoch=len(generator), epochs=3)
```
"""
import json
import os
import weakref

import keras
import numpy as np
import tensorflow as tf

__all__ = ["STRATEGIES", "DEFAULT_HEARTBEAT_SECONDS", "WorkerLost", "read_tf_config",
           "make_strategy", "is_chief", "worker_index", "distribute_batches",
           "dropped_per_epoch", "predict_on_batch", "lost_worker"]

STRATEGIES = ("none", "mirrored", "multiworker")

# How long a worker may go without a heartbeat before the others give up on it. The
# heartbeats come from a background thread, so a slow step, a long evaluation or a big
# save does not count; a killed or frozen worker is noticed within this time (a killed
# one usually at once, from its closed connections).
DEFAULT_HEARTBEAT_SECONDS = 10.0


class WorkerLost(RuntimeError):
    """Another worker of a multi-worker run stopped answering (it died, froze or lost
    the network): every collective fails, so training stops on all of them."""


def read_tf_config(environ=None):
    """The cluster of ``TF_CONFIG``, checked: ``(addresses, index)``, every worker's
    ``host:port`` (the chief first) and this process's place among them.

    ``TF_CONFIG`` is TensorFlow's JSON description of the cluster and of this process's
    place in it, e.g. ``{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
    "task": {"type": "worker", "index": 0}}`` (worker 0 is the chief unless the cluster
    has a ``chief`` task).

    Raises:
        ValueError: ``TF_CONFIG`` is unset, not JSON, or does not place this process
            in its cluster; the message says which.
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        raise ValueError('--distribute multiworker needs TF_CONFIG, e.g. TF_CONFIG=\'{"cluster": '
                         '{"worker": ["host1:12345", "host2:12345"]}, "task": {"type": '
                         '"worker", "index": 0}}\' (see the README)')
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}): {text!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' object: {text!r}")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise ValueError(f"TF_CONFIG cluster {job!r} must be a list of 'host:port' "
                             f"strings, got {addresses!r}")
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ValueError(f"TF_CONFIG cluster has job(s) {unknown}: MultiWorkerMirroredStrategy "
                         "takes 'worker' (and optionally one 'chief')")
    task_type, task_index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise ValueError(f"TF_CONFIG task type {task_type!r} is not a job of the cluster "
                         f"({sorted(cluster)})")
    if not isinstance(task_index, int) or not 0 <= task_index < len(cluster[task_type]):
        raise ValueError(f"TF_CONFIG task index {task_index!r} is out of range for the "
                         f"{len(cluster[task_type])} {task_type!r} address(es)")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError("TF_CONFIG cluster may have one 'chief' at most")
    workers = cluster.get("chief", []) + cluster.get("worker", [])
    index = task_index if task_type == "chief" else len(cluster.get("chief", [])) + task_index
    return workers, index


def make_strategy(kind="none", heartbeat_seconds=DEFAULT_HEARTBEAT_SECONDS):
    """The ``tf.distribute`` strategy of ``kind``.

    For ``multiworker``, call it before TensorFlow runs any operation (collectives are
    configured at start-up; TensorFlow refuses them later).

    Args:
        kind: ``"none"`` (the default strategy: one device), ``"mirrored"``
            (``MirroredStrategy`` over this machine's GPUs, or its CPU without any) or
            ``"multiworker"`` (``MultiWorkerMirroredStrategy`` over the cluster of
            ``TF_CONFIG``; every worker runs the same script with its own ``TF_CONFIG``
            task, and the call returns once all of them have connected).
        heartbeat_seconds: for ``multiworker``, how long a silent worker is waited for
            before the others stop with :class:`WorkerLost` (from :func:`lost_worker`).

    Raises:
        ValueError: an unknown ``kind`` or a bad ``TF_CONFIG``, before anything starts.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"distribution strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "none":
        return tf.distribute.get_strategy()
    _patch_keras_for_distribution()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    read_tf_config()
    _configure_heartbeats(heartbeat_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy()


def _configure_heartbeats(seconds):
    """Sets the coordination service's heartbeat timeout (the strategy installs its own
    service, with TensorFlow's default timeout, only when none is configured yet)."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    leader = "/job:chief/replica:0/task:0" if cluster.get("chief") \
        else "/job:worker/replica:0/task:0"
    jobs = [coordination_config_pb2.CoordinatedJob(name=name, num_tasks=len(addresses))
            for name, addresses in sorted(cluster.items())]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=leader, coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=int(seconds * 1000))


def _patch_keras_for_distribution():
    """Mends three places where Keras 3 (TensorFlow backend) goes wrong with several
    replicas; each mended function does what Keras's does on one device.

    - A loss reduced with ``mean_with_sample_weight`` (the MLM loss, the pointer loss:
      a sum over real tokens divided by their number) divides each replica's sum by
      that replica's own count, so the update is an average of per-replica means, not
      the mean over the global batch; here the count is summed over the replicas.
    - Gradient clipping (``clipnorm``, ``global_clipnorm``, ``clipvalue``) clips each
      replica's part of the gradient before the parts are summed, so a clipped update
      differs from one device's; here the parts are summed first and the sum clipped.
    - Two failures on the first step of any ``fit`` under
      ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585,
      tensorflow/tensorflow#72388): building the model from the first batch averages
      the per-replica *inputs* with a cross-worker ``reduce`` that rejects a structure,
      and the logs' mean is reduced along axis 0 of a scalar.
    """
    from keras.src.backend.tensorflow import trainer
    from keras.src.backend.tensorflow.optimizer import TFOptimizer
    from keras.src.losses import loss as loss_module

    if getattr(trainer, "_bertkit_distribution", False):
        return
    keras_reduce_values = loss_module.reduce_values

    def reduce_values(values, sample_weight=None, reduction="sum_over_batch_size"):
        context = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if reduction != "mean_with_sample_weight" or sample_weight is None or \
                context is None or replicas == 1 or tuple(values.shape) in ((), (0,)):
            return keras_reduce_values(values, sample_weight, reduction)
        total = keras.ops.sum(values)
        count = keras.ops.cast(keras.ops.sum(sample_weight), total.dtype)
        # Dividing by the mean count a replica keeps Keras's 1/replicas scaling right.
        mean_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count) / replicas
        return loss_module.scale_loss_for_distribution(
            keras.ops.divide_no_nan(total, mean_count))

    loss_module.reduce_values = reduce_values

    keras_clip = TFOptimizer._clip_gradients

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        clipping = self.clipnorm or self.global_clipnorm or self.clipvalue
        if not clipping or context is None or replicas == 1:
            return keras_clip(self, grads)
        present = [g for g in grads if g is not None]
        summed = iter(keras_clip(self, context.all_reduce(tf.distribute.ReduceOp.SUM, present)))
        # Keras sums the replicas' gradients next: each hands on its share of the clipped sum.
        return [None if g is None else _divide(next(summed), replicas) for g in grads]

    TFOptimizer._clip_gradients = _clip_gradients

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                # Any replica's batch has the structure and dtypes the build needs.
                data_batch = tf.nest.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    keras_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(
                strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=0 if v.shape.rank else None),
                values)
        return keras_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer._bertkit_distribution = True


def _divide(gradient, count):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values / count, gradient.indices, gradient.dense_shape)
    return gradient / count


def lost_worker(error):
    """The :class:`WorkerLost` of a collective's failure (TensorFlow raises
    ``UnavailableError`` or ``DeadlineExceededError`` when a peer is gone), else None."""
    if isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)):
        why = next((line.strip() for line in str(error).splitlines() if "aborted by" in line),
                   str(error).strip().splitlines()[0] if str(error).strip() else "")
        return WorkerLost(f"another worker stopped answering, so training stopped ({why})")
    return None


def worker_index(strategy=None):
    """``(index, count)`` of this worker among the strategy's workers (``(0, 1)`` on one
    machine); the chief is index 0."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().jobs:
        return 0, 1
    spec = resolver.cluster_spec().as_dict()
    order = [("chief", i) for i in range(len(spec.get("chief", [])))] + \
            [("worker", i) for i in range(len(spec.get("worker", [])))]
    return order.index((resolver.task_type, resolver.task_id)), len(order)


def is_chief(strategy=None):
    """True on the process that writes files: the only one, or the cluster's chief
    (its ``chief`` task, else worker 0)."""
    return worker_index(strategy)[0] == 0


def _replica_slices(batch, replicas, first, count):
    """Rows ``[first, first + count)`` of ``batch`` cut into ``replicas`` equal slices,
    stacked: ``[count, rows // replicas, ...]`` per tensor (the remainder dropped)."""
    def cut(tensor):
        rows = tf.shape(tensor)[0] // replicas
        kept = tensor[:rows * replicas]
        shaped = tf.reshape(kept, tf.concat([[replicas, rows], tf.shape(tensor)[1:]], 0))
        return shaped[first:first + count]
    return tf.nest.map_structure(cut, batch)


def distribute_batches(strategy, dataset):
    """A distributed dataset whose step ``i`` is global batch ``i`` of ``dataset``,
    split into equal slices, one a replica.

    Every worker must build ``dataset`` identically (same data, same seed): each keeps
    the slices of its own replicas. A batch whose size is not a multiple of the replica
    count loses its last rows (at most ``replicas - 1``; :func:`dropped_per_epoch`
    counts them), so that every replica's mean loss weighs the same and the summed
    update is that of the global batch. Under the default strategy ``dataset`` is
    returned as it is.

    Args:
        strategy: a ``tf.distribute`` strategy.
        dataset: a ``tf.data.Dataset`` of global batches (every tensor batch-major).
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset

    def per_worker(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        sliced = dataset.map(lambda *batch: _replica_slices(
            batch if len(batch) > 1 else batch[0], replicas, first, local))
        return sliced.unbatch().prefetch(tf.data.AUTOTUNE)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
    return strategy.distribute_datasets_from_function(per_worker, options=options)


def dropped_per_epoch(batch_sizes, replicas):
    """How many items an epoch of batches of ``batch_sizes`` loses to
    :func:`distribute_batches` over ``replicas`` replicas."""
    return int(sum(size % replicas for size in batch_sizes))


def predict_on_batch(model, x):
    """``model(x)`` in inference mode, as numpy, on the whole batch ``x``, under any
    strategy, traced once for every batch shape.

    For a functional model (``model.inputs`` known, Keras's own ``predict_step``) and
    ``x`` an array or a list of arrays, one per input, the model is called through a
    ``tf.function`` whose signature is the inputs' own shapes: one trace serves every
    batch size and length, where Keras's ``predict_on_batch`` traces again for the first
    new batch shapes (and TensorFlow warns of retracing once a few models have done so,
    because all of them count against Keras's one step function). Each input is cast to
    its ``keras.Input`` dtype, as Keras does. Any other model goes through
    ``model.predict_on_batch(x)``.

    Under a distribution strategy, Keras's ``predict_on_batch`` runs ``x`` on every
    replica and gathers the outputs of all replicas of all workers, which repeats the
    batch (and, across workers, makes every process wait for the others); here the
    model is called directly, once, with the current weights.
    """
    strategy = getattr(model, "distribute_strategy", None)  # None: any predict_on_batch
    replicated = strategy is not None and strategy.num_replicas_in_sync > 1
    specs = _input_specs(model, x)
    if specs is None and not replicated:
        return model.predict_on_batch(x)
    functions = _INFERENCE.setdefault(model, {})  # one with a signature, one without
    call = functions.get(specs)
    if call is None:
        call = functions[specs] = _inference_function(model, specs)
    if specs is None:
        outputs = call(tf.nest.map_structure(tf.convert_to_tensor, _as_tuple(x)))
    else:
        arrays = x if isinstance(x, (list, tuple)) else [x]
        outputs = call(*[tf.cast(tf.convert_to_tensor(a), s.dtype)
                         for a, s in zip(arrays, specs)])
    return keras.tree.map_structure(np.asarray, outputs)


_INFERENCE = weakref.WeakKeyDictionary()  # model -> {input specs: traced function}


def _input_specs(model, x):
    """The ``tf.TensorSpec`` of each of ``model``'s inputs when ``model`` can be called
    through one signature with ``x`` (see :func:`predict_on_batch`), else ``None``."""
    inputs = getattr(model, "inputs", None)
    if (not isinstance(model, keras.Model) or not inputs
            or type(model).predict_step is not keras.Model.predict_step):
        return None
    count = len(x) if isinstance(x, (list, tuple)) else 1
    if isinstance(x, dict) or count != len(inputs):
        return None
    return tuple(tf.TensorSpec(i.shape, i.dtype) for i in inputs)


def _inference_function(model, specs):
    """``model`` called in inference mode as a ``tf.function``; the model is held weakly,
    so that the cache of these functions does not keep it alive."""
    held = weakref.ref(model)
    jit = getattr(model, "jit_compile", False) is True
    if specs is None:
        return tf.function(lambda inputs: held()(inputs, training=False),
                           reduce_retracing=True, jit_compile=jit)
    return tf.function(lambda *inputs: held()(list(inputs) if len(inputs) > 1 else inputs[0],
                                              training=False),
                       input_signature=specs, jit_compile=jit)


def _as_tuple(x):
    return tuple(x) if isinstance(x, list) else x
