"""What the bert4keras peer scripts add to bert4keras's own examples: importing its
optimizers under tf-keras 2.21, and checking that a checkpoint really loaded.

Runs in bert4keras's virtualenv (tf-keras, TF_USE_LEGACY_KERAS=1 TF_KERAS=1), never in
bertkit's.
"""
import numpy as np


def import_bert4keras_optimizers(keras, *names):
    """``bert4keras.optimizers``'s objects ``names``, imported under tf-keras 2.21.

    bert4keras.optimizers subclasses ``keras.optimizers.Optimizer``, which since tf-keras
    2.11 is the new optimizer class without ``_set_hyper``/``add_slot``. It is pointed at
    ``keras.optimizers.legacy.Optimizer`` (OptimizerV2, the class bert4keras was written
    for) while the module is imported, then restored; site-packages is not edited.
    """
    new_optimizer_class = keras.optimizers.Optimizer
    keras.optimizers.Optimizer = keras.optimizers.legacy.Optimizer
    try:
        import bert4keras.optimizers as optimizers
    finally:
        keras.optimizers.Optimizer = new_optimizer_class
    return tuple(getattr(optimizers, name) for name in names)


def check_checkpoint_loaded(bert, checkpoint_path, backend):
    """Asserts that every variable ``bert``'s mapping names is in the checkpoint and
    equals the loaded weight; prints what was loaded and what was left unused."""
    import tensorflow as tf

    in_ckpt = dict(tf.train.list_variables(checkpoint_path))
    used, missing, different = set(), [], []
    mapping = {bert.prefixed(k): v for k, v in bert.variable_mapping().items()}
    for layer_name, names in mapping.items():
        if layer_name not in bert.layers:
            continue
        weights = bert.layers[layer_name].trainable_weights
        if len(weights) != len(names):
            missing.append('%s: %d weights, %d mapped' % (layer_name, len(weights), len(names)))
        for w, name in zip(weights, names):
            if name not in in_ckpt:
                missing.append(name)
                continue
            used.add(name)
            if not np.allclose(backend.eval(w), bert.load_variable(checkpoint_path, name)):
                different.append(name)
    print('checkpoint: %d variables loaded into %d model weights, %d missing %s, '
          '%d not equal %s; checkpoint variables left unused: %s' %
          (len(used), len(bert.model.trainable_weights), len(missing), missing,
           len(different), different, sorted(set(in_ckpt) - used)))
    assert not missing and not different, 'checkpoint not fully loaded'
