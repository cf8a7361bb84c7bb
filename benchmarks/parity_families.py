"""Parity of bertkit's ELECTRA, NEZHA, RoFormer and RoFormer-v2 with independent references.

Per family, a tiny PyTorch reference is built from a config with random weights (nothing is
downloaded): transformers' `ElectraForPreTraining` (embedding_size 16 != hidden 32, so the
projection runs), `deprecated.nezha.NezhaModel` (max_relative_position 8, so distances clip
within the 20-token batch) and `RoFormerModel`, and for RoFormer-v2 the `roformer` package's
`RoFormerModel(use_bias=False, norm_type="rms_norm")`. Weights are redrawn from N(0, 0.2)
(LayerNorm gammas N(1, 0.2)) so that a misplaced bias or norm shows, written under Google's
TF1 names with `tf.compat.v1.train.Saver` (names and shapes checked against the published
names), loaded with `build_transformer_model(..., model=FAMILY)`, and the last hidden states
of a padded batch (lengths 20, 13, 7, both segments) are compared on the real positions; for
ELECTRA the discriminator's probabilities too. Exits 1 if any family is off by more than
--atol, printing that family's per-layer differences.

Setup (a virtualenv of its own; torch pinned exactly: it resolves to a local CPU build):

    python3 -m venv ../parity-venv && ../parity-venv/bin/pip install -e . \
        "torch==2.13.0" "transformers==4.57.*" "roformer==0.4.3"

roformer 0.4.3 predates transformers 4.57: four names it imports from modeling_utils moved
or went, which `import_roformer_package` bridges without touching the model code.

Usage:
    ../parity-venv/bin/python benchmarks/parity_families.py [--families electra,nezha]
        [--seed 0] [--atol 1e-4] [--per-layer]
"""
import argparse
import importlib.metadata
import json
import os
import sys
import tempfile

import numpy as np
import torch

FAMILIES = ("electra", "nezha", "roformer", "roformer_v2")
TINY = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            initializer_range=0.02, layer_norm_eps=1e-12)
LENGTHS = (20, 13, 7)
DENSE = {"attention/self/query": "HH", "attention/self/key": "HH", "attention/self/value": "HH",
         "attention/output/dense": "HH", "intermediate/dense": "HI", "output/dense": "IH"}


def import_roformer_package():
    """The `roformer` package's `RoFormerModel` and `RoFormerConfig`.

    roformer 0.4.3 imports three helpers from `transformers.modeling_utils` that newer
    transformers keep in `transformers.pytorch_utils` (the same functions), and
    `SequenceSummary`, which transformers dropped and only its multiple-choice head uses.
    """
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices",
                 "prune_linear_layer"):
        if not hasattr(modeling_utils, name):
            setattr(modeling_utils, name, getattr(pytorch_utils, name))
    if not hasattr(modeling_utils, "SequenceSummary"):
        modeling_utils.SequenceSummary = None
    from roformer import RoFormerConfig, RoFormerModel
    return RoFormerModel, RoFormerConfig


def build_reference(family):
    """(torch model in eval mode, config dict for bert_config.json, reference label)."""
    import transformers

    tv = f"transformers {transformers.__version__}"
    if family == "electra":
        config = dict(TINY, embedding_size=16)
        model = transformers.ElectraForPreTraining(transformers.ElectraConfig(**config))
        label = f"{tv} ElectraForPreTraining"
    elif family == "nezha":
        from transformers.models.deprecated.nezha import NezhaConfig, NezhaModel
        config = dict(TINY, max_relative_position=8)
        model = NezhaModel(NezhaConfig(**config), add_pooling_layer=False)
        label = f"{tv} deprecated.nezha.NezhaModel"
    elif family == "roformer":
        config = dict(TINY)
        model = transformers.RoFormerModel(transformers.RoFormerConfig(**config))
        label = f"{tv} RoFormerModel"
    else:
        model_class, config_class = import_roformer_package()
        config = dict(TINY, hidden_act="relu")
        model = model_class(config_class(**config, use_bias=False, norm_type="rms_norm"))
        label = f"roformer {importlib.metadata.version('roformer')} RoFormerModel (v2 options)"
    return model.eval(), config, label


def randomise(model, seed, std=0.2):
    """Redraws every trained parameter from N(0, std), LayerNorm gammas from N(1, std):
    the default init (zero biases, unit gammas) would hide a misplaced bias or norm."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:  # RoFormer's rotary sin/cos table is fixed
                gamma = name.endswith("LayerNorm.weight")
                p.copy_(gamma + std * torch.randn(p.shape, generator=generator))


def google_variables(model, scope):
    """The reference's weights under Google's TF1 names ({name: float32 array})."""
    out = {}
    for path, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding)) \
                or "embed_positions" in path:  # RoFormer's fixed rotary table: not stored
            continue
        name = path.replace("dense_prediction", "dense_1").replace(".layer.", ".layer_")
        parts = name.split(".")
        name = "/".join(parts if parts[0] in ("electra", "discriminator_predictions")
                        else [scope] + parts)
        weight = module.weight.detach().numpy()
        bias = getattr(module, "bias", None)
        bias = None if bias is None else bias.detach().numpy()
        if isinstance(module, torch.nn.Embedding):
            out[name] = weight
        elif isinstance(module, torch.nn.LayerNorm):
            out[f"{name}/gamma"], out[f"{name}/beta"] = weight, bias
        else:  # torch keeps Linear weights as [out, in], TF kernels are [in, out]
            out[f"{name}/kernel"] = weight.T.copy()
            if bias is not None:
                out[f"{name}/bias"] = bias
    return out


def published_variables(family, c):
    """{name: shape} of the published checkpoints' variables for this config."""
    V, H, I, P, S = (c[k] for k in ("vocab_size", "hidden_size", "intermediate_size",
                                     "max_position_embeddings", "type_vocab_size"))
    E = c.get("embedding_size", H)
    dims = {"H": H, "I": I}
    scope = "electra" if family == "electra" else "bert"
    biased = family != "roformer_v2"
    emb = f"{scope}/embeddings/"
    names = {emb + "word_embeddings": (V, E), emb + "token_type_embeddings": (S, E)}
    if family == "electra":
        names[emb + "position_embeddings"] = (P, E)
    if biased:
        names[emb + "LayerNorm/gamma"] = names[emb + "LayerNorm/beta"] = (E,)
    if E != H:
        names.update({"electra/embeddings_project/kernel": (E, H),
                      "electra/embeddings_project/bias": (H,)})
    for n in range(c["num_hidden_layers"]):
        layer = f"{scope}/encoder/layer_{n}/"
        for dense, (a, b) in DENSE.items():
            names[f"{layer}{dense}/kernel"] = (dims[a], dims[b])
            if biased:
                names[f"{layer}{dense}/bias"] = (dims[b],)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm") if biased else ():
            names[f"{layer}{norm}/gamma"] = names[f"{layer}{norm}/beta"] = (H,)
    for dense, units in (("dense", H), ("dense_1", 1)) if family == "electra" else ():
        names[f"discriminator_predictions/{dense}/kernel"] = (H, units)
        names[f"discriminator_predictions/{dense}/bias"] = (units,)
    return names


def write_checkpoint(directory, config, variables, family):
    """Writes bert_config.json and a TF1 Saver checkpoint; checks the names against the
    published names by reading the file back. Returns (config path, checkpoint prefix)."""
    import tensorflow as tf

    config_path = os.path.join(directory, "bert_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    prefix = os.path.join(directory, "bert_model.ckpt")
    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.Variable(tf.constant(v), name=k) for k, v in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_vars)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)
    written = {k: tuple(v) for k, v in tf.train.load_checkpoint(prefix)
               .get_variable_to_shape_map().items()}
    expected = published_variables(family, config)
    if written != expected:
        raise AssertionError(f"{family}: checkpoint differs from the published names: extra "
                             f"{sorted(set(written.items()) - set(expected.items()))}, missing "
                             f"{sorted(set(expected.items()) - set(written.items()))}")
    return config_path, prefix


def make_batch(vocab_size, seed):
    """Token ids (0 = padding, never drawn for a real token) and segment ids (the second
    part of each sequence in segment 1), [3, 20] int32 each."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(LENGTHS), max(LENGTHS)), "int32")
    segments = np.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = rng.integers(1, vocab_size, length)
        segments[row, length // 2:length] = 1
    return ids, segments


def run_reference(model, family, ids, segments):
    """(hidden states per layer [L+1 of B,T,H], discriminator probabilities or None)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(ids != 0, dtype=torch.long),
                    token_type_ids=torch.tensor(segments, dtype=torch.long),
                    output_hidden_states=True)
    hidden = [h.numpy() for h in out.hidden_states]
    probs = torch.sigmoid(out.logits).numpy() if family == "electra" else None
    return hidden, probs


def print_layer_diffs(family, model, config, ids, segments, hidden):
    """Max |diff| after the embeddings and after each block, against the reference's
    hidden_states: where the two first part ways tells which part is off."""
    import keras

    # Only the ELECTRA config here has embedding_size (16 != 32): its projection comes last.
    first = "Embedding-Mapping" if "embedding_size" in config else "Embedding-Norm"
    names = [first] + [f"Transformer-{i}-FeedForward-Norm"
                       for i in range(config["num_hidden_layers"])]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    for name, ours, ref in zip(names, probe.predict([ids, segments], verbose=0), hidden):
        print(f"  {family:12s} {name:32s} max|diff| {np.abs(ours - ref)[ids != 0].max():.3e}")


def check_family(family, seed, atol, per_layer):
    """Builds, writes, loads and compares one family; returns its table row."""
    from bertkit.models import build_transformer_model

    torch.manual_seed(seed)
    reference, config, label = build_reference(family)
    randomise(reference, seed)
    ids, segments = make_batch(config["vocab_size"], seed)
    keep = ids != 0
    hidden, probs = run_reference(reference, family, ids, segments)
    row = {"family": family, "reference": label, "hidden": None, "disc": None, "error": None}
    with tempfile.TemporaryDirectory() as directory:
        variables = google_variables(reference, "electra" if family == "electra" else "bert")
        config_path, prefix = write_checkpoint(directory, config, variables, family)
        try:
            model = build_transformer_model(config_path, prefix, model=family)
            ours = model.predict([ids, segments], verbose=0)
            row["hidden"] = float(np.abs(ours - hidden[-1])[keep].max())
            if family == "electra":
                head = build_transformer_model(config_path, prefix, model=family,
                                               with_discriminator=True)
                ours_p = head.predict([ids, segments], verbose=0)[..., 0]
                row["disc"] = float(np.abs(ours_p - probs)[keep].max())
        except Exception as error:  # a family not (yet) loadable is a failure, not a crash
            row["error"] = f"{type(error).__name__}: {error}"[:200]
            return row
        worst = max(v for v in (row["hidden"], row["disc"]) if v is not None)
        if per_layer or worst > atol:
            print_layer_diffs(family, model, config, ids, segments, hidden)
    return row


def reference_notes(families):
    """Where the references differ from bertkit's documented behaviour, checked on the references."""
    from transformers.activations import ACT2FN

    notes = [f"'gelu' in the transformers references is {type(ACT2FN['gelu']).__name__} "
             "(erf GELU), as bertkit's 'gelu' and Google ELECTRA's modeling.py (Google "
             "BERT's modeling.py computes the tanh form under that name).",
             "Padded keys: transformers adds finfo(float32).min to their scores, the roformer "
             "package -10000 as bertkit; the same after a float32 softmax."]
    if "nezha" in families:
        from transformers.models.deprecated.nezha import NezhaConfig, NezhaModel
        attention = NezhaModel(NezhaConfig(**TINY)).encoder.layer[0].attention.self
        shape = tuple(attention.relative_positions_encoding.positions_encoding.shape)
        notes.append("NEZHA: the reference reads max_relative_position from its config "
                     f"(default {NezhaConfig().max_relative_position}, as bertkit) but "
                     f"precomputes R {shape} for max_position_embeddings positions, so its "
                     "inputs stop at that length; bertkit has no such limit.")
    if "roformer_v2" in families:
        norm = build_reference("roformer_v2")[0].embeddings.LayerNorm
        notes.append(f"RoFormer-v2: the package has no v2 class (RoFormerModel with use_bias="
                     f"False, norm_type='rms_norm'); its norm is {type(norm).__name__}(eps="
                     f"{norm.eps} = layer_norm_eps): x/sqrt(mean(x^2)+eps), as bertkit.")
    return notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="comma-separated, from " + ",".join(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--per-layer", action="store_true",
                        help="print per-layer differences for every family, not only failures")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {FAMILIES}")
    import tensorflow as tf
    import transformers

    transformers.logging.set_verbosity_error()
    tf.get_logger().setLevel("ERROR")  # each family's new model retraces predict: expected

    rows = [check_family(f, args.seed, args.atol, args.per_layer) for f in families]
    print(f"\n{'family':12s} {'reference':50s} {'hidden':>10s} {'disc':>10s}  result"
          f" (atol {args.atol:g})")
    failed = False
    for row in rows:
        values = [v for v in (row["hidden"], row["disc"]) if v is not None]
        ok = row["error"] is None and max(values) <= args.atol
        failed |= not ok
        fmt = ["-" if v is None else f"{v:.2e}" for v in (row["hidden"], row["disc"])]
        print(f"{row['family']:12s} {row['reference']:50s} {fmt[0]:>10s} {fmt[1]:>10s}  "
              f"{'pass' if ok else 'FAIL'}" + (f"  {row['error']}" if row["error"] else ""))
    print("\nNotes on the references:")
    for note in reference_notes(families):
        print(f"- {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
