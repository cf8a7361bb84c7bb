"""Resumable training: the state of a run, saved as it goes and restored on ``--resume``.

This module owns what an interrupted fine-tuning run needs to go on as if it had not
stopped: :func:`state_bytes` / :func:`restore_state` (the weights, every optimizer
variable — the step counter, Adam's moments, derived-optimizer slots, the EMA weights
— and the run's position and scores, in one HDF5 file), the :class:`TrainingBackup`
callback that commits that file to a :class:`~bertkit.storage.RunDirectory` every
``save_every_steps`` steps and at each epoch's end, and :func:`fit_epochs`, the loop
that runs ``model.fit`` one epoch at a time from where the saved run stopped, with the
training generator replaying that epoch's batches (``DataGenerator.replaying``).

Why not ``keras.callbacks.BackupAndRestore``: it restarts an interrupted epoch from
its first batch (the batches before the interruption are trained twice, so the
resumed run is not the run that was interrupted), it writes the weights and the
position as two files that a kill can leave out of step, it keeps no best score and
no data order, and under ``MultiWorkerMirroredStrategy`` every worker writes.
"""
import contextlib
import io
import json

import h5py
import keras
import numpy as np

from bertkit.distribute import distribute_batches, is_chief, lost_worker
from bertkit.storage import write_bytes_atomically

__all__ = ["STATE_FILE", "batches_trained", "state_bytes", "restore_state", "read_position",
           "TrainingBackup", "fit_epochs"]

STATE_FILE = "resume.h5"


def batches_trained(optimizer):
    """Batches trained so far, read from the optimizer's own step counter (restored
    with it): the count cannot disagree with the weights, even when an interruption
    lands between a step and its callbacks. With gradient accumulation it counts the
    micro-batches, as the data does."""
    counter = getattr(optimizer, "_iterations", None)
    counter = optimizer.iterations if counter is None else counter
    return int(keras.ops.convert_to_numpy(counter))


def state_bytes(model, optimizer, attrs=None):
    """The training state as the bytes of an HDF5 file.

    Args:
        model: whose ``weights`` are saved (all of them, trainable or not).
        optimizer: whose ``variables`` are saved.
        attrs: JSON-ready scalars (position, best score, seed, ...) stored as attributes.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for group, variables in (("weights", model.weights), ("optimizer", optimizer.variables)):
            g = f.create_group(group)
            for index, variable in enumerate(variables):
                g.create_dataset(str(index), data=keras.ops.convert_to_numpy(variable))
    return buffer.getvalue()


def restore_state(path, model, optimizer):
    """Restores what :func:`state_bytes` wrote; returns its attributes as a dict.

    The optimizer is built first if it is not. Every saved shape is checked before any
    variable is assigned, so a state of another model leaves this one untouched.

    Raises:
        ValueError: the counts or shapes differ from the model's (naming the variable).
    """
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    with h5py.File(path, "r") as f:
        pairs = []
        for group, variables in (("weights", model.weights), ("optimizer", optimizer.variables)):
            if len(f[group]) != len(variables):
                raise ValueError(f"{path}: {len(f[group])} {group} variables saved, the model "
                                 f"has {len(variables)}; resume with the same settings")
            for index, variable in enumerate(variables):
                value = f[group][str(index)][()]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(f"{path}: saved {group} variable {index} has shape "
                                     f"{value.shape}, {variable.path} has {variable.shape}")
                pairs.append((variable, value))
        attrs = {key: _python(value) for key, value in f.attrs.items()}
    for variable, value in pairs:
        variable.assign(value)
    return attrs


def read_position(path):
    """The attributes of a saved state (its position and scores), without loading it."""
    with h5py.File(path, "r") as f:
        return {key: _python(value) for key, value in f.attrs.items()}


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


class TrainingBackup(keras.callbacks.Callback):
    """Commits the training state to a run directory every ``save_every_steps`` steps,
    at each epoch's end and on :meth:`save`; :meth:`restore` puts it back.

    The state file (``resume.N.h5``) goes into the run's manifest beside the files the
    run already keeps (the best weights), through :meth:`RunDirectory.commit`: a kill
    or a full disk at any moment leaves the last committed state whole. Only the chief
    of a multi-worker run writes. :meth:`finish` ends a completed run: the state
    (optimizer slots included, three times the weights) is replaced by the final
    weights alone.

    Args:
        run: the :class:`~bertkit.storage.RunDirectory`.
        settings: the run's settings (as the evaluator commits them).
        steps_per_epoch: batches an epoch, to turn the step count into a position.
        save_every_steps: also save every this many steps (None: at epoch ends only).
        evaluator: an :class:`~bertkit.callbacks.Evaluator` whose best score is saved
            and restored with the state, so that a resumed run keeps the best weights
            only when they beat the best before the interruption.
        seed: the training generator's seed, recorded so a resume with another seed
            is refused.
        flags: JSON-ready ``{name: value}`` of what defines the run (learning rate,
            epochs, batch size, ...), recorded so a resume that changes one is refused
            with the flag named.
    """

    def __init__(self, run, settings, steps_per_epoch, save_every_steps=None, evaluator=None,
                 seed=None, flags=None):
        super().__init__()
        if save_every_steps is not None and save_every_steps < 1:
            raise ValueError(f"save_every_steps must be at least 1, got {save_every_steps}")
        self.run, self.settings = run, settings
        self.steps_per_epoch, self.save_every_steps = steps_per_epoch, save_every_steps
        self.evaluator, self.seed, self.flags = evaluator, seed, flags or {}
        self.saved_step = 0  # a fresh run has nothing to save before its first step

    @property
    def step(self):
        """Batches trained so far (from the optimizer's counter)."""
        return batches_trained(self.model.optimizer)

    def position(self):
        """``(epoch, batch)`` the next step trains."""
        return divmod(self.step, self.steps_per_epoch)

    def attrs(self):
        """What the state file records besides the variables."""
        epoch, batch = self.position()
        attrs = {"step": self.step, "epoch": epoch, "batch": batch,
                 "steps_per_epoch": self.steps_per_epoch}
        if self.seed is not None:
            attrs["seed"] = self.seed
        if self.evaluator is not None:
            attrs["best"] = float(self.evaluator.best)
        attrs["flags"] = json.dumps(self.flags, sort_keys=True)
        return attrs

    def save(self):
        """Commits the current state, unless this step is saved already (or this is not
        the chief)."""
        if not is_chief(self.model.distribute_strategy) or self.saved_step == self.step:
            return
        attrs = self.attrs()
        data = state_bytes(self.model, self.model.optimizer, attrs)
        manifest = self.run.read() or {}
        keep = set(manifest.get("files", {})) - {"state"}
        state = {k: attrs[k] for k in ("epoch", "step")}
        if self.evaluator is not None:
            state[self.evaluator.name] = attrs["best"]
        self.run.commit(self.settings,
                        {"state": (STATE_FILE, lambda path: write_bytes_atomically(path, data))},
                        state=state, keep=keep)
        self.saved_step = attrs["step"]

    def restore(self, path):
        """Loads a state saved by :meth:`save` into the model and its optimizer;
        returns ``(epoch, batch)`` to go on from.

        Raises:
            ValueError: the state is of another model, another epoch length or seed.
        """
        saved = read_position(path)
        if saved.get("steps_per_epoch") != self.steps_per_epoch:
            raise ValueError(f"{path}: saved with {saved.get('steps_per_epoch')} steps an "
                             f"epoch, this run has {self.steps_per_epoch}; resume with the "
                             "same data and --batch-size")
        if "seed" in saved and saved["seed"] != self.seed:
            raise ValueError(f"{path}: saved with --seed {saved['seed']}, not {self.seed}")
        saved_flags = json.loads(saved.get("flags", "{}"))
        changed = sorted(name for name in set(saved_flags) | set(self.flags)
                         if saved_flags.get(name) != self.flags.get(name))
        if changed:
            listed = "; ".join(f"--{name.replace('_', '-')} {self.flags.get(name)} (the saved "
                               f"run: {saved_flags.get(name)})" for name in changed)
            raise ValueError(f"--resume: {listed}. A resumed run keeps the flags it was "
                             "started with; drop these flags, or start a new run with "
                             "--overwrite or another --output-dir")
        attrs = restore_state(path, self.model, self.model.optimizer)
        if self.evaluator is not None and "best" in attrs:
            self.evaluator.best = attrs["best"]
        self.saved_step = attrs["step"]
        return attrs["epoch"], attrs["batch"]

    def finish(self, files):
        """Ends a completed run: commits ``files`` (e.g. the final weights) and drops the
        state; the best weights and other files stay."""
        if not is_chief(self.model.distribute_strategy):
            return {}
        manifest = self.run.read() or {}
        keep = set(manifest.get("files", {})) - {"state"} - set(files)
        return self.run.commit(self.settings, files, state=manifest.get("state"), keep=keep)

    def on_train_batch_end(self, batch, logs=None):
        if self.save_every_steps and self.step % self.save_every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


def fit_epochs(model, generator, make_dataset, epochs, callbacks=(), backup=None,
               start=(0, 0), strategy=None, verbose="auto"):
    """``model.fit`` one epoch at a time, from ``start = (epoch, batch)``.

    Each epoch gets a fresh one-epoch dataset of ``generator``, so an epoch's batches
    never depend on how far the previous epoch's input pipeline read ahead, and a run
    resumed at ``(epoch, batch)`` trains the batches the interrupted run would have.
    A ``KeyboardInterrupt`` (Ctrl-C) saves through ``backup`` before it goes on up; a
    worker of a multi-worker run that stops answering raises
    :class:`~bertkit.distribute.WorkerLost` (the last save is where a resume goes on).

    Args:
        model: a compiled Keras model.
        generator: the training ``DataGenerator`` (with ``seed`` when resuming).
        make_dataset: ``generator -> tf.data.Dataset`` of one epoch (global batches),
            e.g. ``lambda g: g.to_dataset(types, shapes, repeat=False)``.
        epochs: the epoch to stop at.
        callbacks: Keras callbacks (the evaluator first, so later ones see its score).
        backup: a :class:`TrainingBackup` (added to the callbacks), or None.
        start: ``(epoch, batch)`` to start from, as :meth:`TrainingBackup.restore`
            returns it.
        strategy: a ``tf.distribute`` strategy: the batches are split across its
            replicas (:func:`bertkit.distribute.distribute_batches`).
        verbose: passed to ``fit``.

    Returns:
        ``{metric: [value an epoch]}`` of the epochs run, as ``History.history``.
    """
    history, one_epoch = {}, _OneEpoch()
    callbacks = [*callbacks, *([backup] if backup is not None else []), one_epoch]
    first_epoch, batch = start
    steps = len(generator)
    try:
        for epoch in range(first_epoch, epochs):
            skip = batch if epoch == first_epoch else 0
            replay = generator.replaying(epoch, skip) if generator.seed is not None or skip \
                else contextlib.nullcontext()
            with replay:
                dataset = make_dataset(generator)
                if strategy is not None:
                    dataset = distribute_batches(strategy, dataset)
                # epochs=epochs so the progress line reads "Epoch 3/5"; one_epoch stops it.
                fit = model.fit(dataset, steps_per_epoch=steps - skip, epochs=epochs,
                                initial_epoch=epoch, callbacks=callbacks, verbose=verbose,
                                shuffle=False)  # the generator shuffles by itself
            for key, values in fit.history.items():
                history.setdefault(key, []).extend(values)
            if one_epoch.stopped_by_others:
                break
    except KeyboardInterrupt:
        if backup is not None:
            with contextlib.suppress(KeyboardInterrupt):
                backup.save()
        raise
    except Exception as error:  # a collective that failed because a worker is gone
        lost = lost_worker(error)
        if lost is None:
            raise
        raise lost from None
    return history


class _OneEpoch(keras.callbacks.Callback):
    """Ends ``fit`` after one epoch (the last callback), remembering whether another
    callback (early stopping, a time limit) had asked to stop."""

    stopped_by_others = False

    def on_epoch_end(self, epoch, logs=None):
        self.stopped_by_others = bool(self.model.stop_training)
        self.model.stop_training = True
