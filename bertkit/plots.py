"""Pictures of a run: training curves and attention heat maps (needs ``bertkit[plots]``).

matplotlib is an extra (``pip install bertkit[plots]``), imported only here and only
when a picture is drawn.

Example:

>>> history = model.fit(...)
>>> save_training_plot("run.png", history.history, attention=probs, tokens=tokens)
"""
import os

import numpy as np

from bertkit.storage import atomic_write

__all__ = ["save_training_plot"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'bertkit[plots]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    return plt, ticker


def save_training_plot(path, history, attention=None, tokens=None):
    """Writes a PNG: one panel a metric over the epochs, and an attention heat map per head.

    Args:
        path: the ``.png`` to write (atomically).
        history: ``{name: [value per epoch]}`` (``History.history``); ``val_x`` is drawn
            in the panel of ``x``.
        attention: optional ``[N, Q, T]`` probabilities of one layer on one sentence.
        tokens: the sentence's tokens, for the heat maps' axes.
    """
    plt, ticker = _pyplot()
    metrics = sorted({name[4:] if name.startswith("val_") else name for name in history})
    heads = 0 if attention is None else len(attention)
    columns = max(len(metrics), min(heads, 4), 1)
    rows = 1 + (-(-heads // columns) if heads else 0)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows),
                                squeeze=False)
    for axis in axes.flat:
        axis.set_visible(False)
    for axis, metric in zip(axes[0], metrics):
        axis.set_visible(True)
        for name, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            if name in history:
                epochs = np.arange(1, len(history[name]) + 1)
                axis.plot(epochs, history[name], style, label=name, markersize=3)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_title(metric)
        axis.legend(fontsize=7)
    for head in range(heads):
        axis = axes[1 + head // columns][head % columns]
        axis.set_visible(True)
        axis.imshow(np.asarray(attention[head]), cmap="viridis", vmin=0.0)
        axis.set_title(f"head {head}", fontsize=8)
        if tokens is not None:
            # Positions stand in for tokens the default font has no glyphs for (CJK).
            labels = [t if t.isascii() else str(i) for i, t in enumerate(tokens)]
            axis.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
            queries = np.asarray(attention[head]).shape[0]
            axis.set_yticks(range(queries), labels[:queries], fontsize=6)
    figure.tight_layout()
    with atomic_write(os.fspath(path), "wb") as f:
        figure.savefig(f, format="png", dpi=110)
    plt.close(figure)
