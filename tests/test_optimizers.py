"""Tests for bertkit.optimizers.

Every extension runs side by side with ``NumpyOptimizer``, a float64 re-implementation
of the update rules written here from their definitions, on a tiny model whose layer
names follow bertkit's (so ``Norm``, ``bias`` and ``Embedding-Token`` patterns mean
something). The MirroredStrategy check runs this file as a script in a subprocess,
because logical devices must be configured before TensorFlow starts.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

from bertkit import ema as bema
from bertkit import optimizers as bo
from bertkit import schedules as bsched

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 12  # token ids are drawn below 8, so embedding rows 8..11 never get a gradient


def tiny_model(seed=0, width=5):
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((4,), dtype="int32", name="Input-Token")
    x = keras.layers.Embedding(VOCAB, 6, name="Embedding-Token")(tokens)
    x = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(x)
    x = keras.layers.Dense(width, activation="tanh", name="Transformer-0-FeedForward")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(2, name="Pooler-Dense")(x))


def batches(count, size=3, seed=1):
    rng = np.random.RandomState(seed)
    return [(rng.randint(0, 8, (size, 4)), rng.randn(size, 2).astype("float32")) for _ in range(count)]


def piecewise(t, schedule):
    """The piecewise-linear factor: 0 at step 0 unless given, constant after the last key."""
    steps, values = zip(*sorted({0: 0.0, **schedule}.items()))
    return float(np.interp(t, steps, values))


def clip_to_norm(gradient, max_norm):
    norm = np.sqrt(np.sum(gradient ** 2))
    return gradient * min(1.0, max_norm / max(norm, 1e-12))


@keras.saving.register_keras_serializable(package="bertkit_tests")
def clip_per_variable(gradient, variable):
    max_norm = 0.05 if "Embedding-" in variable.path else 0.2
    norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(gradient)))
    return gradient * keras.ops.minimum(1.0, max_norm / keras.ops.maximum(norm, 1e-12))


class NumpyOptimizer:
    """The update rules of the derived optimizers in float64 numpy, one option each.

    ``layer_adaptation`` is None (off) or the list of names it excludes; ``lookahead`` is
    ``(steps_per_slow_update, slow_step_size)``; ``clip_norms`` is ``(embeddings, others)``.
    """

    def __init__(self, weights, lr=0.01, base="adam", bias_correction=True, epsilon=1e-6,
                 weight_decay_rate=0.0, exclude_from_weight_decay=(), layer_adaptation=None,
                 lr_schedule=None, grad_accum_steps=1, lookahead=None, lazy=(),
                 ema_momentum=None, paramwise=None, clip_norms=None):
        self.w = {p: w.astype(np.float64) for p, w in weights.items()}
        self.m = {p: np.zeros_like(w) for p, w in self.w.items()}
        self.v = {p: np.zeros_like(w) for p, w in self.w.items()}
        self.accumulated = {p: np.zeros_like(w) for p, w in self.w.items()}
        self.slow = {p: w.copy() for p, w in self.w.items()}
        self.average = {p: w.copy() for p, w in self.w.items()}
        self.__dict__.update(lr=lr, base=base, bias_correction=bias_correction, epsilon=epsilon,
                             weight_decay_rate=weight_decay_rate, exclude=exclude_from_weight_decay,
                             layer_adaptation=layer_adaptation, lr_schedule=lr_schedule,
                             grad_accum_steps=grad_accum_steps, lookahead=lookahead, lazy=lazy,
                             ema_momentum=ema_momentum, paramwise=paramwise or {},
                             clip_norms=clip_norms)
        self.micro_steps = self.t = 0  # t counts real updates

    def step(self, gradients):
        self.micro_steps += 1
        if self.grad_accum_steps > 1:
            for p, g in gradients.items():
                self.accumulated[p] += g
            if self.micro_steps % self.grad_accum_steps:
                return
            gradients = {p: a / self.grad_accum_steps for p, a in self.accumulated.items()}
            self.accumulated = {p: np.zeros_like(a) for p, a in self.accumulated.items()}
        lr = self.lr * (piecewise(self.t, self.lr_schedule) if self.lr_schedule else 1.0)
        for p, g in gradients.items():
            self.update(p, g, lr * np.prod([f for k, f in self.paramwise.items() if k in p]))
        self.t += 1
        if self.lookahead and self.t % self.lookahead[0] == 0:
            for p in self.w:
                self.slow[p] = self.slow[p] + self.lookahead[1] * (self.w[p] - self.slow[p])
                self.w[p] = self.slow[p].copy()
        if self.ema_momentum is not None:
            momentum = self.ema_momentum if self.t > 1 else 0.0
            for p in self.w:
                self.average[p] = momentum * self.average[p] + (1 - momentum) * self.w[p]

    def update(self, p, g, lr):
        w, b1, b2 = self.w[p], 0.9, 0.999
        if self.clip_norms:
            g = clip_to_norm(g, self.clip_norms[0] if "Embedding-" in p else self.clip_norms[1])
        if self.base == "sgd":  # Keras SGD with momentum 0.9
            m, v = 0.9 * self.m[p] - lr * g, self.v[p]
            delta = m
        else:
            m, v = b1 * self.m[p] + (1 - b1) * g, b2 * self.v[p] + (1 - b2) * g ** 2
            t = self.t + 1
            correction = np.sqrt(1 - b2 ** t) / (1 - b1 ** t) if self.bias_correction else 1.0
            delta = -lr * correction * m / (np.sqrt(v) + self.epsilon)
        if self.weight_decay_rate and not any(name in p for name in self.exclude):
            delta = delta - lr * self.weight_decay_rate * w
        if self.layer_adaptation is not None and not any(name in p for name in self.layer_adaptation):
            w_norm, h_norm = np.linalg.norm(w), np.linalg.norm(delta / lr) if lr else 0.0
            delta = delta * (w_norm / h_norm if w_norm > 0 and h_norm > 0 else 1.0)
        if any(name in p for name in self.lazy):
            rows = np.any(g != 0, axis=tuple(range(1, g.ndim)), keepdims=True) if g.ndim > 1 else g != 0
            m, v, delta = np.where(rows, m, self.m[p]), np.where(rows, v, self.v[p]), delta * rows
        self.m[p], self.v[p], self.w[p] = m, v, w + delta


def run_side_by_side(optimizer, reference_options, steps=6, model=None):
    """Trains with ``optimizer`` (in a tf.function, as fit does) and the numpy reference."""
    model = model or tiny_model()
    variables = model.trainable_variables
    reference = NumpyOptimizer({v.path: v.numpy() for v in variables}, **reference_options)
    optimizer.build(variables)
    apply = tf.function(lambda gradients: optimizer.apply(gradients, variables))
    for x, y in batches(steps):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(model(x) - y))
        gradients = tape.gradient(loss, variables)  # the embedding's is a tf.IndexedSlices
        apply(gradients)
        reference.step({v.path: tf.convert_to_tensor(g).numpy() for v, g in zip(variables, gradients)})
        for v in variables:
            np.testing.assert_allclose(v.numpy(), reference.w[v.path], rtol=0, atol=1e-6, err_msg=v.path)
    return model, reference


@keras.saving.register_keras_serializable(package="bertkit_tests")
def identity(gradient, variable):
    return gradient


@pytest.mark.parametrize("base", [
    lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: keras.optimizers.Adam(0.01),
    lambda: keras.optimizers.AdamW(0.01), lambda: keras.optimizers.Lion(0.01),
    lambda: keras.optimizers.Adafactor(0.01), lambda: keras.optimizers.RMSprop(0.01),
    lambda: keras.optimizers.Lamb(0.01)], ids=["sgd", "adam", "adamw", "lion", "adafactor", "rmsprop", "lamb"])
def test_pipeline_is_transparent_for_every_keras_optimizer(base):
    """Derived with an identity transform, any Keras optimizer takes exactly its own steps."""
    plain, derived = base(), bo.extend_with_gradient_transform(type(base()))(
        **base().get_config(), gradient_transform=identity)
    models = tiny_model(), tiny_model()
    for model, optimizer in zip(models, (plain, derived)):
        for x, y in batches(3):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean(keras.ops.square(model(x) - y))
            gradients = tape.gradient(loss, model.trainable_variables)
            # Dense gradients: Keras's own sparse handling is what bertkit corrects.
            optimizer.apply([tf.convert_to_tensor(g) for g in gradients], model.trainable_variables)
    for a, b in zip(models[0].weights + plain.variables, models[1].weights + derived.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=b.path)


def test_adam_sums_repeated_tokens_before_squaring():
    # The batches repeat token ids, so the embedding gradient has repeated indices.
    run_side_by_side(bo.Adam(0.01), {})


WD = dict(weight_decay_rate=0.1, exclude_from_weight_decay=["Norm", "bias"])


def test_weight_decay_excludes_by_path():
    optimizer = bo.extend_with_weight_decay(bo.Adam)(0.01, **WD)
    run_side_by_side(optimizer, dict(WD))


def test_weight_decay_over_sgd():
    optimizer = bo.extend_with_weight_decay(keras.optimizers.SGD)(0.05, momentum=0.9, **WD)
    run_side_by_side(optimizer, dict(WD, lr=0.05, base="sgd"))


def test_layer_adaptation():
    optimizer = bo.extend_with_layer_adaptation(bo.Adam)(0.01, exclude_from_layer_adaptation=["Norm"])
    run_side_by_side(optimizer, dict(layer_adaptation=["Norm"]))


def test_piecewise_linear_lr():
    schedule = {2: 1.0, 4: 0.1}
    optimizer = bo.extend_with_piecewise_linear_lr(bo.Adam)(0.01, lr_schedule=schedule)
    run_side_by_side(optimizer, dict(lr_schedule=schedule), steps=7)


def test_piecewise_linear_schedule_values_and_config():
    schedule = bsched.PiecewiseLinear({1000: 1.0, 2000: 0.1})
    for t in [0, 1, 500, 999, 1000, 1500, 2000, 2500, 10 ** 6]:
        assert float(schedule(t)) == pytest.approx(piecewise(t, {1000: 1.0, 2000: 0.1}), abs=1e-6)
    restored = bsched.PiecewiseLinear.from_config(json.loads(json.dumps(schedule.get_config())))
    assert float(restored(1500)) == pytest.approx(0.55)
    assert float(bsched.PiecewiseLinear({0: 2.0, 10: 0.0})(5)) == pytest.approx(1.0)


def test_gradient_accumulation_and_real_step_count():
    optimizer = bo.extend_with_gradient_accumulation(bo.Adam)(0.01, grad_accum_steps=3)
    model, _ = run_side_by_side(optimizer, dict(grad_accum_steps=3), steps=7)
    assert int(optimizer.iterations) == 2 and int(optimizer._iterations) == 7


def test_keras_schedule_sees_real_updates_under_accumulation():
    schedule = bsched.PiecewiseLinear({2: 0.01})
    optimizer = bo.extend_with_gradient_accumulation(bo.Adam)(schedule, grad_accum_steps=2)
    run_side_by_side(optimizer, dict(lr=1.0, lr_schedule={2: 0.01}, grad_accum_steps=2), steps=8)


def test_gradient_accumulation_leaves_slots_alone_between_updates():
    model = tiny_model()
    optimizer = bo.extend_with_gradient_accumulation(bo.Adam)(0.01, grad_accum_steps=2)
    variables = model.trainable_variables
    optimizer.build(variables)
    accumulators = {id(a) for a in optimizer._accumulators} | {id(optimizer._iterations)}
    slots = [v for v in optimizer.variables if id(v) not in accumulators]
    for step, (x, y) in enumerate(batches(4)):
        before = [s.numpy().copy() for s in slots + variables]
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(model(x) - y))
        optimizer.apply(tape.gradient(loss, variables), variables)
        changed = [not np.array_equal(b, s.numpy()) for b, s in zip(before, slots + variables)]
        assert any(changed) == (step % 2 == 1)


def test_lookahead_starts_from_the_initial_weights():
    model = tiny_model()
    optimizer = bo.extend_with_lookahead(bo.Adam)(0.01, steps_per_slow_update=2, slow_step_size=0.5)
    optimizer.build(model.trainable_variables)
    for slow, v in zip(optimizer._slow_weights, model.trainable_variables):
        np.testing.assert_array_equal(slow.numpy(), v.numpy())
    run_side_by_side(optimizer, dict(lookahead=(2, 0.5)), model=model)


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_lazy_optimization_keeps_rows_without_gradient(base):
    cls, lr, extra = (bo.Adam, 0.01, {}) if base == "adam" else (keras.optimizers.SGD, 0.05, {"momentum": 0.9})
    optimizer = bo.extend_with_lazy_optimization(cls)(lr, include_in_lazy_optimization=["Embedding-Token"], **extra)
    model = tiny_model()
    initial = model.get_layer("Embedding-Token").embeddings.numpy()
    run_side_by_side(optimizer, dict(lr=lr, base=base, lazy=["Embedding-Token"]), model=model)
    np.testing.assert_array_equal(model.get_layer("Embedding-Token").embeddings.numpy()[8:], initial[8:])


def test_lazy_optimization_rejects_factored_slots():
    model = tiny_model()
    optimizer = bo.extend_with_lazy_optimization(keras.optimizers.Adafactor)(
        0.01, include_in_lazy_optimization=["Embedding-Token"])
    (x, y), = batches(1)
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.square(model(x) - y))
    with pytest.raises(ValueError, match="slots shaped like the variable"):
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)


def test_exponential_moving_average_and_weight_swapping():
    optimizer = bema.extend_with_exponential_moving_average(bo.Adam)(0.01, ema_momentum=0.9)
    model, reference = run_side_by_side(optimizer, dict(ema_momentum=0.9))
    raw = [v.numpy().copy() for v in model.trainable_variables]
    with optimizer.ema_weights():
        for v in model.trainable_variables:
            np.testing.assert_allclose(v.numpy(), reference.average[v.path], rtol=0, atol=1e-6)
        with pytest.raises(RuntimeError, match="already"):
            optimizer.apply_ema_weights()
    for v, r in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(v.numpy(), r)
    with pytest.raises(RuntimeError, match="apply_ema_weights"):
        optimizer.reset_old_weights()


def test_ema_callback_evaluates_with_averages_and_fit_keeps_raw_weights():
    model = tiny_model()
    model.compile(bema.extend_with_exponential_moving_average(bo.Adam)(0.05, ema_momentum=0.5), "mse")
    seen = []

    def record(model):
        seen.append(model.get_layer("Pooler-Dense").kernel.numpy().copy())
        return {"kernel_sum": float(np.sum(seen[-1]))}

    x, y = map(np.concatenate, zip(*batches(4)))
    history = model.fit(x, y, batch_size=3, epochs=2, verbose=0, callbacks=[
        bema.EMAEvaluation(validation_data=(x, y), evaluate_fn=record)])
    assert set(history.history) >= {"loss", "ema_loss", "ema_kernel_sum"}
    paths = [v.path for v in model.trainable_variables]
    average = model.optimizer._averages[paths.index("Pooler-Dense/kernel")].numpy()
    np.testing.assert_array_equal(seen[-1], average)
    assert not np.allclose(model.get_layer("Pooler-Dense").kernel.numpy(), average)


def test_parameter_wise_lr_multiplies_matching_factors():
    schedule = {"Embedding-": 0.5, "Transformer-0-": 0.1, "FeedForward": 3.0}
    optimizer = bo.extend_with_parameter_wise_lr(bo.Adam)(0.01, paramwise_lr_schedule=schedule)
    run_side_by_side(optimizer, dict(paramwise=schedule))


def test_gradient_transform_clips_per_variable():
    optimizer = bo.extend_with_gradient_transform(bo.Adam)(0.01, gradient_transform=clip_per_variable)
    run_side_by_side(optimizer, dict(clip_norms=(0.05, 0.2)))
    restored = bo.extend_with_gradient_transform(bo.Adam).from_config(
        json.loads(json.dumps(optimizer.get_config())))
    assert restored.gradient_transform is clip_per_variable


def test_lamb_is_layer_adaptation_over_weight_decay():
    LAMB = bo.extend_with_layer_adaptation(bo.extend_with_weight_decay(bo.Adam), "LAMBForTest")
    optimizer = LAMB(0.01, exclude_from_layer_adaptation=["Norm"], **WD)
    run_side_by_side(optimizer, dict(WD, layer_adaptation=["Norm"]))


def test_weight_decay_uses_the_scheduled_learning_rate():
    optimizer = bo.AdamWLR(0.01, lr_schedule={3: 1.0}, **WD)
    run_side_by_side(optimizer, dict(WD, lr_schedule={3: 1.0}))


def test_accumulation_with_schedule_and_ema_counts_real_updates():
    cls = bema.extend_with_exponential_moving_average(
        bo.extend_with_gradient_accumulation(bo.extend_with_piecewise_linear_lr(bo.Adam)))
    optimizer = cls(0.01, lr_schedule={2: 1.0}, grad_accum_steps=2, ema_momentum=0.8)
    _, reference = run_side_by_side(
        optimizer, dict(lr_schedule={2: 1.0}, grad_accum_steps=2, ema_momentum=0.8), steps=8)
    with optimizer.ema_weights():
        for v in optimizer._trainable_variables:
            np.testing.assert_allclose(v.numpy(), reference.average[v.path], rtol=0, atol=1e-6)


def test_lazy_weight_decay_with_parameter_wise_lr():
    cls = bo.extend_with_parameter_wise_lr(bo.extend_with_weight_decay(
        bo.extend_with_lazy_optimization(bo.Adam)))
    schedule = {"Embedding-": 0.5}
    optimizer = cls(0.01, include_in_lazy_optimization=["Embedding-Token"],
                    paramwise_lr_schedule=schedule, **WD)
    run_side_by_side(optimizer, dict(WD, lazy=["Embedding-Token"], paramwise=schedule))


def google_adam_weight_decay(params, gradients_per_step, lr, weight_decay_rate, exclude):
    """Google BERT's ``AdamWeightDecayOptimizer.apply_gradients`` (optimization.py), in numpy."""
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}
    for gradients in gradients_per_step:
        for name, grad in gradients.items():
            param = params[name]
            next_m = 0.9 * m[name] + (1.0 - 0.9) * grad
            next_v = 0.999 * v[name] + (1.0 - 0.999) * np.square(grad)
            update = next_m / (np.sqrt(next_v) + 1e-6)
            if not any(e in name for e in exclude):
                update += weight_decay_rate * param
            params[name], m[name], v[name] = param - lr * update, next_m, next_v
    return params


def test_bias_correction_false_reproduces_google_adam_weight_decay():
    model = tiny_model()
    variables = model.trainable_variables
    initial = {v.path: v.numpy().astype(np.float64) for v in variables}
    optimizer = bo.extend_with_weight_decay(bo.Adam)(
        0.01, bias_correction=False, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"])
    gradients_per_step = []
    for x, y in batches(10):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(model(x) - y))
        gradients = tape.gradient(loss, variables)
        gradients_per_step.append({v.path: tf.convert_to_tensor(g).numpy() for v, g in zip(variables, gradients)})
        optimizer.apply(gradients, variables)
    expected = google_adam_weight_decay(initial, gradients_per_step, 0.01, 0.01, ["Norm", "bias"])
    for v in variables:
        np.testing.assert_allclose(v.numpy(), expected[v.path], rtol=0, atol=1e-6, err_msg=v.path)


def applied_ops(optimizer, model):
    """The op types of one traced ``apply`` of ``optimizer`` to ``model``'s weights."""
    variables = model.trainable_variables
    optimizer.build(variables)
    gradients = [tf.ones_like(v) for v in variables]
    graph_def = tf.function(lambda: optimizer.apply(gradients, variables)) \
        .get_concrete_function().graph.as_graph_def()
    return ({node.op for node in graph_def.node}
            | {node.op for function in graph_def.library.function for node in function.node_def})


@pytest.mark.parametrize("make, fused", [
    (lambda: bo.Adam(0.01), True),
    (lambda: bo.Adam(0.01, amsgrad=True), False),
    (lambda: bo.fine_tuning_optimizer(0.01, 100, ema_momentum=0.99), True),
    (lambda: bo.extend_with_lookahead(bo.AdamW)(0.01), True),
    (lambda: bo.extend_with_layer_adaptation(bo.AdamW)(0.01), False),
    (lambda: bo.extend_with_lazy_optimization(bo.AdamW)(
        0.01, include_in_lazy_optimization=["Embedding-", "Transformer-", "Pooler-"]), False),
], ids=["adam", "amsgrad", "fine-tuning", "lookahead", "layer-adaptation", "lazy"])
def test_fused_adam_kernel_only_where_the_update_allows_it(make, fused):
    """Adam (with decoupled weight decay, schedules, EMA...) updates in place with the
    fused kernel; an extension that needs the whole step (layer adaptation) or a row mask
    (lazy optimization) keeps the captured op-by-op step."""
    assert ("ResourceApplyAdam" in applied_ops(make(), tiny_model())) == fused


def test_fused_adam_is_as_close_to_adam_as_the_op_by_op_step():
    """Over 30 steps against the float64 reference, the fused kernel (which computes
    ``1 - beta_2`` in float32: 1.3e-5 off, undone by the rate passed) deviates no more
    than the op-by-op step does, with and without bias correction."""
    class OpByOp(bo.AdamW):
        def apply_step_in_place(self, *args, **kwargs):
            return False

    for bias_correction in (True, False):
        errors = {}
        for optimizer_class in (bo.AdamW, OpByOp):
            model = tiny_model()
            variables = model.trainable_variables
            optimizer = optimizer_class(0.01, bias_correction=bias_correction, **WD)
            reference = NumpyOptimizer({v.path: v.numpy() for v in variables},
                                       bias_correction=bias_correction, **WD)
            optimizer.build(variables)
            apply = tf.function(lambda gradients: optimizer.apply(gradients, variables))
            for x, y in batches(30):
                with tf.GradientTape() as tape:
                    loss = keras.ops.mean(keras.ops.square(model(x) - y))
                gradients = tape.gradient(loss, variables)
                apply(gradients)
                reference.step({v.path: tf.convert_to_tensor(g).numpy()
                                for v, g in zip(variables, gradients)})
            errors[optimizer_class] = max(np.abs(v.numpy() - reference.w[v.path]).max()
                                          for v in variables)
            fused = "ResourceApplyAdam" in applied_ops(optimizer, model)
            assert fused == (optimizer_class is bo.AdamW)
        assert errors[bo.AdamW] < 2e-6, errors
        assert errors[bo.AdamW] <= 1.5 * errors[OpByOp] + 2e-7, errors


def test_layerwise_lr_decay_schedule():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 6, name="Embedding-Token")(tokens)
    for i in range(3):
        x = keras.layers.Dense(6, name=f"Transformer-{i}-FeedForward")(x)
    model = keras.Model(tokens, keras.layers.Dense(2, name="Pooler-Dense")(x))
    schedule = bsched.layerwise_lr_decay(model, decay=0.5)
    assert schedule == {"Embedding-": 0.5 ** 4, "Transformer-0-": 0.5 ** 3,
                        "Transformer-1-": 0.5 ** 2, "Transformer-2-": 0.5}
    with pytest.raises(ValueError, match="Transformer-"):
        bsched.layerwise_lr_decay(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_bad_arguments_get_clear_errors():
    with pytest.raises(TypeError, match="Keras optimizer class"):
        bo.extend_with_weight_decay(keras.optimizers.Adam())
    with pytest.raises(ValueError, match="already has WeightDecay"):
        bo.extend_with_weight_decay(bo.AdamW)
    with pytest.raises(TypeError, match="exclude_from_weight_decay"):
        bo.AdamW(0.01, exclude_from_weight_decay="bias")
    with pytest.raises(ValueError, match="lr_schedule"):
        bo.AdamWLR(0.01, lr_schedule={"warmup": 1.0})
    with pytest.raises(ValueError, match="grad_accum_steps"):
        bo.extend_with_gradient_accumulation(bo.Adam)(grad_accum_steps=0)
    with pytest.raises(ValueError, match="use_ema"):
        bo.AdamEMA(use_ema=True)


STACK = dict(lr_schedule={2: 1.0}, grad_accum_steps=2, ema_momentum=0.9,
             steps_per_slow_update=2, paramwise_lr_schedule={"Embedding-": 0.5}, **WD)


def stack_class():
    cls = bo.extend_with_weight_decay(bo.Adam)
    for extend in [bo.extend_with_piecewise_linear_lr, bo.extend_with_gradient_accumulation,
                   bema.extend_with_exponential_moving_average, bo.extend_with_lookahead,
                   bo.extend_with_parameter_wise_lr]:
        cls = extend(cls)
    return cls


def test_config_round_trip_rebuilds_the_class():
    optimizer = stack_class()(0.01, **STACK)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer)))
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(optimizer)
    assert restored.get_config() == optimizer.get_config()


@keras.saving.register_keras_serializable(package="bertkit_tests")
class CustomAdamW(bo.AdamW):
    """A user's subclass of a derived optimizer: reloading must keep it."""


def test_config_round_trip_keeps_a_registered_subclass():
    config = keras.saving.serialize_keras_object(CustomAdamW(0.01, weight_decay_rate=0.2))
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(restored) is CustomAdamW and restored.weight_decay_rate == 0.2


def run_python(*args):
    """Runs python in a fresh process that imports this checkout of bertkit."""
    path = os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=path))


def test_save_mid_training_and_resume_equals_uninterrupted(tmp_path):
    data = batches(4, size=4)
    model = tiny_model()
    model.compile(stack_class()(0.01, **STACK), "mse")
    for x, y in data[:3]:  # stops in the middle of an accumulation
        model.train_on_batch(x, y)
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    for m in (model, restored):
        m.train_on_batch(*data[3])
    assert int(restored.optimizer.iterations) == 2
    for a, b in zip(model.weights + model.optimizer.variables,
                    restored.weights + restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # A fresh process knows no derived class yet: the config alone must rebuild it.
    code = ("import keras, bertkit; m = keras.models.load_model(%r); "
            "print(type(m.optimizer).__name__, int(m.optimizer.iterations))" % path)
    done = run_python("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == [type(model.optimizer).__name__, "1"]


def fit_weights(make_optimizer, jit_compile, strategy=None, steps=8, width=5):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():  # the optimizer too: it binds to the strategy it is made in
        model = tiny_model(width=width)
        model.compile(make_optimizer(), "mse", jit_compile=jit_compile)
    x, y = map(np.concatenate, zip(*batches(steps, size=4)))
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    weights = [v.numpy() for v in model.trainable_variables]
    if hasattr(model.optimizer, "ema_weights"):
        with model.optimizer.ema_weights():
            weights += [v.numpy() for v in model.trainable_variables]
    return weights


def test_fit_with_jit_compile_matches_without():
    lazy = bo.extend_with_lazy_optimization(bo.extend_with_layer_adaptation(stack_class()))
    options = dict(STACK, include_in_lazy_optimization=["Embedding-Token"])
    # Width 200 gives a kernel of more than 1000 values: TensorFlow embeds smaller
    # tensors as constants, and only bigger ones catch slots whose initial values
    # (copies of the weights) cannot be lifted out of the compiled train step.
    plain, jitted = (fit_weights(lambda: lazy(0.01, **options), jit, width=200) for jit in (False, True))
    for a, b in zip(plain, jitted):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def mirrored_optimizers():
    lazy = bo.extend_with_gradient_transform(bo.extend_with_lazy_optimization(
        bo.extend_with_layer_adaptation(bo.AdamEMA)))
    return {
        "adam": lambda: keras.optimizers.Adam(0.01),
        "stack": lambda: stack_class()(0.01, **STACK),
        "lazy_lamb_ema": lambda: lazy(0.01, include_in_lazy_optimization=["Embedding-Token"],
                                      gradient_transform=clip_per_variable, ema_momentum=0.5),
    }


def mirrored_worker():
    """Run as a script: prints, per optimizer, the largest difference 2 CPUs vs 1."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    differences = {}
    for name, make in mirrored_optimizers().items():
        one, two = fit_weights(make, False), fit_weights(make, False, strategy)
        differences[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
    print(json.dumps(differences))


def test_mirrored_strategy_two_cpus_matches_one_device():
    done = run_python(os.path.abspath(__file__))
    assert done.returncode == 0, done.stderr[-3000:]
    differences = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(differences) == set(mirrored_optimizers())
    assert all(d < 1e-6 for d in differences.values()), differences


if __name__ == "__main__":
    cpu, = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    mirrored_worker()


def test_fine_tuning_optimizer_assembles_the_usual_recipe():
    from bertkit.models import build_transformer_model
    from conftest import TINY_CONFIG

    model = build_transformer_model(**TINY_CONFIG)
    optimizer = bo.fine_tuning_optimizer(1e-3, 100, warmup_steps=10, model=model,
                                                 layerwise_decay=0.5, ema_momentum=0.9)
    assert hasattr(optimizer, "ema_weights")
    assert optimizer.paramwise_lr_schedule == bsched.layerwise_lr_decay(model, 0.5)
    assert optimizer.weight_decay_excluded == ["Norm", "bias"]
    # Warm-up to the peak at step 10, linear decay to zero at step 100.
    schedule = bsched.PiecewiseLinear({10: 1.0, 100: 0.0})
    for step, factor in ((0, 0.0), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0), (150, 0.0)):
        assert float(schedule(step)) == pytest.approx(factor)
    assert optimizer.lr_schedule == {10: 1.0, 100: 0.0}
    with pytest.raises(ValueError, match="layerwise_decay needs the model"):
        bo.fine_tuning_optimizer(1e-3, 100, layerwise_decay=0.9)
    with pytest.raises(ValueError, match="total_steps"):
        bo.fine_tuning_optimizer(1e-3, 0)


def test_fused_adam_step_under_xla_matches_graph_mode():
    """``fit`` with ``jit_compile=True`` compiles the fused kernel (XLA has its own
    ResourceApplyAdam) and takes the same steps as graph mode."""
    rng = np.random.RandomState(0)
    x, y = rng.randn(64, 8).astype("float32"), rng.randint(0, 2, 64)
    weights = []
    for jit_compile in (True, False):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(2)])
        initial = model.weights[0].numpy()
        model.compile(bo.fine_tuning_optimizer(1e-2, 100, weight_decay_rate=0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit_compile)
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        assert np.abs(model.weights[0].numpy() - initial).max() > 1e-3  # it trained
        weights.append([w.numpy() for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
