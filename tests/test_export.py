"""Exports load where bertkit cannot be imported and give the Keras model's outputs.

Each export is read back in a fresh Python process in which ``import bertkit`` fails
(``conftest.read_export``).
"""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_CONFIG, read_export

pytest.importorskip("tf2onnx", reason="the export extra is not installed")
pytest.importorskip("onnxruntime", reason="the export extra is not installed")
pytest.importorskip("openvino", reason="the export extra is not installed")

import keras  # noqa: E402
import ml_dtypes  # noqa: E402
import tensorflow as tf  # noqa: E402

from bertkit.config import BertConfig  # noqa: E402
from bertkit.export import export_model, float32_twin, serving_twin  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.tasks.classification import ClassificationHead  # noqa: E402
from bertkit.tasks.spans import tags_to_spans  # noqa: E402
from bertkit.tasks.tagging import (CRFTaggingHead, GlobalPointerHead,  # noqa: E402
                                   SoftmaxTaggingHead, iob2_span_tensor)
from bertkit.tasks.triples import TripleExtractor  # noqa: E402

def tiny_encoder(seed=0, **overrides):
    keras.utils.set_random_seed(seed)
    config = dict(TINY_CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return build_transformer_model(BertConfig.from_dict(dict(config, **overrides)))


def padded_batch(seed=0, lengths=(9, 4, 1, 6)):
    """Token ids of mixed lengths padded with 0 (and [CLS]/[SEP]-like ends)."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), max(lengths)), "int32")
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(1, TINY_CONFIG["vocab_size"], n)
    segments = (np.arange(tokens.shape[1]) >= 3).astype("int32") * (tokens > 0)
    return {"Input-Token": tokens, "Input-Segment": segments.astype("int32")}


def span_rows(spans_per_sentence, types):
    """Sets of ``(start, end, type name)`` per sentence -> sorted ``(b, start, end, t)``."""
    return sorted((b, s, e, types.index(k)) for b, spans in enumerate(spans_per_sentence)
                  for s, e, k in spans)


def test_classifier_exports_probabilities_and_labels(tmp_path):
    model = ClassificationHead(3, pooling="mean").attach(tiny_encoder())
    batch = padded_batch()
    expected = model.predict([batch["Input-Token"], batch["Input-Segment"]], verbose=0)
    written = export_model(model, tmp_path / "export", outputs=model.layers[-1],
                           metadata={"labels": ["neg", "neu", "pos"]})
    assert sorted(written) == ["onnx", "openvino", "saved_model"]
    manifest = json.loads((tmp_path / "export" / "serving.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["Input-Token", "Input-Segment"]
    assert {i["dtype"] for i in manifest["inputs"]} == {"int32"}
    assert manifest["metadata"]["labels"] == ["neg", "neu", "pos"]
    results = read_export(tmp_path, tmp_path / "export", batch)
    for fmt, tolerance in (("saved_model", 1e-5), ("onnx", 1e-4), ("openvino", 1e-4)):
        np.testing.assert_allclose(results[fmt]["probabilities"], expected, atol=tolerance,
                                   err_msg=fmt)
        assert results[fmt]["probabilities"].dtype == np.float32
        np.testing.assert_array_equal(results[fmt]["label"], expected.argmax(-1), err_msg=fmt)


def test_int8_onnx_holds_every_kernel_in_seven_bits_and_close_probabilities(tmp_path):
    import onnx
    from onnx import numpy_helper

    model = ClassificationHead(3, pooling="mean").attach(tiny_encoder())
    batch = padded_batch()
    expected = model.predict([batch["Input-Token"], batch["Input-Segment"]], verbose=0)
    written = export_model(model, tmp_path / "export", outputs=model.layers[-1],
                           formats=["onnx-int8"])
    assert sorted(written) == ["onnx-int8"]
    # the float32 file it was quantized from is not left behind
    assert sorted(os.listdir(tmp_path / "export")) == ["model.int8.onnx", "serving.json"]
    manifest = json.loads((tmp_path / "export" / "serving.json").read_text())
    assert manifest["formats"] == {"onnx-int8": "model.int8.onnx"}

    graph = onnx.load(tmp_path / "export" / "model.int8.onnx").graph
    stored = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    int8 = {name[:-len("_quantized")]: value for name, value in stored.items()
            if name.endswith("_quantized") and value.dtype == np.int8}
    kernels = [w.numpy() for w in model.weights
               if w.path.endswith("kernel") and len(w.shape) == 2]
    assert len(kernels) == 2 * 6 + 1  # q, k, v, output, two feed-forward; the classifier
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) == len(kernels)
    for kernel in kernels:
        # each kernel is stored as int8 values times one scale, rounded to the nearest
        # step, within 7 bits (weights and activations kept to 7 bits: see quantize_onnx)
        matches = []
        for name, values in int8.items():
            if values.shape != kernel.shape:
                continue
            scale = float(stored[name + "_scale"])
            if np.all(np.abs(values * scale - kernel) <= scale / 2 * 1.001):
                matches.append(values)
        assert matches, f"no int8 copy of a {kernel.shape} kernel"
        assert 48 <= np.abs(matches[0]).max() <= 64

    results = read_export(tmp_path, tmp_path / "export", batch)["onnx-int8"]
    np.testing.assert_allclose(results["probabilities"], expected, atol=0.03)
    np.testing.assert_array_equal(results["label"], results["probabilities"].argmax(-1))


def test_converted_graphs_write_layer_norm_as_mean_and_variance(tmp_path):
    # TensorFlow's own graph computes layer norm as a training-mode batch norm over the
    # rows (the pattern its oneDNN rewrite fuses); a converter given that graph keeps a
    # batch norm over [1, rows, width, 1], which OpenVINO ran 5x slower than its fused
    # layer norm. The converters get the plain mean and variance instead.
    import onnx
    import openvino as ov

    model = ClassificationHead(2).attach(tiny_encoder())
    export_model(model, tmp_path / "export", outputs=model.layers[-1])
    onnx_ops = {node.op_type for node in onnx.load(tmp_path / "export" / "model.onnx").graph.node}
    assert "BatchNormalization" not in onnx_ops, sorted(onnx_ops)
    ir = ov.Core().read_model(tmp_path / "export" / "openvino" / "model.xml")
    ir_ops = {op.get_type_name() for op in ir.get_ops()}
    assert not {"BatchNormInference", "BatchNormTraining"} & ir_ops, ir_ops


def test_crf_tagger_exports_viterbi_paths_and_spans(tmp_path):
    head = CRFTaggingHead(["PER", "LOC"], name="Tagger")
    model = head.attach(tiny_encoder(seed=3))
    rng = np.random.default_rng(3)
    head.crf.stored_transitions.assign(rng.normal(0, 2, (5, 5)).astype("float32"))
    batch = padded_batch(seed=3)
    x = [batch["Input-Token"], batch["Input-Segment"]]
    paths = head.decoder(model).predict(x, verbose=0)
    mask = batch["Input-Token"] > 0
    expected_spans = span_rows(head.spans(paths, mask), head.tag_types)
    export_model(model, tmp_path / "export", outputs=head, metadata={"tags": head.tags})
    results = read_export(tmp_path, tmp_path / "export", batch)
    for fmt in ("saved_model", "onnx", "openvino"):
        np.testing.assert_array_equal(results[fmt]["tags"], paths, err_msg=fmt)
        got = sorted(map(tuple, results[fmt]["spans"].tolist()))
        assert got == expected_spans, fmt


def test_global_pointer_exports_spans(tmp_path):
    head = GlobalPointerHead(["PER", "LOC", "ORG"], head_size=8)
    model = head.attach(tiny_encoder(seed=4))
    # Biases that put some spans above 0, so that there is something to find.
    pointer_bias = head.pointer.bias_dense.bias
    pointer_bias.assign(np.full(pointer_bias.shape, 0.5, "float32"))
    batch = padded_batch(seed=4)
    logits = model.predict([batch["Input-Token"], batch["Input-Segment"]], verbose=0)
    expected = span_rows(head.spans(logits, batch["Input-Token"] > 0), head.tag_types)
    assert expected, "no span scored above 0: the test would prove nothing"
    export_model(model, tmp_path / "export", outputs=head)
    results = read_export(tmp_path, tmp_path / "export", batch)
    for fmt in ("saved_model", "onnx", "openvino"):
        assert sorted(map(tuple, results[fmt]["spans"].tolist())) == expected, fmt


def test_bf16_model_exports_float32_outputs(tmp_path, global_bf16_policy):
    model = ClassificationHead(2).attach(tiny_encoder(seed=5))
    assert model.layers[3].compute_dtype == "bfloat16"
    batch = padded_batch(seed=5)
    x = [batch["Input-Token"], batch["Input-Segment"]]
    expected = model.predict(x, verbose=0)
    twin = float32_twin(model)
    assert {layer.compute_dtype for layer in twin.layers} == {"float32"}
    expected_fp32 = twin.predict(x, verbose=0)
    export_model(model, tmp_path / "export", outputs=["probabilities"])
    results = read_export(tmp_path, tmp_path / "export", batch)
    # The SavedModel is the bf16 graph itself; ONNX and OpenVINO are its float32 twin.
    np.testing.assert_allclose(results["saved_model"]["probabilities"], expected, atol=1e-5)
    for fmt in ("saved_model", "onnx", "openvino"):
        assert results[fmt]["probabilities"].dtype == np.float32, fmt
    for fmt in ("onnx", "openvino"):
        np.testing.assert_allclose(results[fmt]["probabilities"], expected_fp32, atol=1e-4)
        np.testing.assert_allclose(results[fmt]["probabilities"], expected, atol=0.05)


def test_serving_twin_holds_the_rounded_weights_and_gives_the_same_bits(tmp_path):
    # A policy given to the builder (not the global one): its layers must serialize too.
    keras.utils.set_random_seed(7)
    encoder = build_transformer_model(BertConfig.from_dict(TINY_CONFIG), dtype="mixed_bfloat16")
    model = CRFTaggingHead(["PER", "LOC"]).attach(encoder)
    batch = padded_batch(seed=7)
    x = [batch["Input-Token"], batch["Input-Segment"]]
    twin = serving_twin(model)
    assert twin is not model and not twin.trainable_weights and model.trainable_weights
    stored = {w.path: w for w in twin.weights}
    matmul_weights = {w.path for w in model.weights if w.path.split("/")[0].endswith(
        ("-MultiHeadSelfAttention", "-FeedForward"))}
    assert len(matmul_weights) == 12 * TINY_CONFIG["num_hidden_layers"]
    for weight in model.weights:
        twin_weight = stored[weight.path]
        if weight.path in matmul_weights:
            # What mixed precision rounds the float32 weight to at every call (round to
            # nearest even, as ml_dtypes does), stored once.
            assert twin_weight.dtype == "bfloat16", weight.path
            rounded = np.asarray(weight.numpy()).astype(ml_dtypes.bfloat16)
            np.testing.assert_array_equal(np.asarray(twin_weight.numpy()), rounded)
        else:  # embeddings, layer norms, the head: as they were
            assert twin_weight.dtype == weight.dtype, weight.path
            np.testing.assert_array_equal(twin_weight.numpy(), weight.numpy())
    np.testing.assert_array_equal(twin.predict(x, verbose=0), model.predict(x, verbose=0))
    assert serving_twin(twin) is twin  # nothing left to store in bfloat16
    fp32 = float32_twin(model)
    assert {w.dtype for w in fp32.weights} == {"float32"}
    assert serving_twin(fp32) is fp32 and float32_twin(fp32) is fp32
    # The SavedModel holds the twin: bfloat16 matmul weights, the same outputs.
    export_model(model, tmp_path / "export", outputs=["potentials"], formats=["saved_model"])
    reader = tf.train.load_checkpoint(str(tmp_path / "export" / "saved_model" / "variables"
                                          / "variables"))
    dtypes = collections.Counter(  # the archive's list of the model's variables
        dtype.name for key, dtype in reader.get_variable_to_dtype_map().items()
        if key.startswith("variables/"))
    assert dtypes["bfloat16"] == len(matmul_weights), dtypes
    results = read_export(tmp_path, tmp_path / "export", batch)
    np.testing.assert_allclose(results["saved_model"]["potentials"],
                               model.predict(x, verbose=0), atol=1e-5)


def test_triple_extractor_exports_both_steps(tmp_path):
    extractor = TripleExtractor(tiny_encoder(seed=6), predicates=["a", "b"])
    batch = padded_batch(seed=6)
    x = [batch["Input-Token"], batch["Input-Segment"]]
    subject_probs, hidden = extractor.subject_model.predict(x, verbose=0)
    subjects = np.array([[1, 2], [0, 1], [0, 0], [2, 4]], "int32")
    object_probs = extractor.object_model.predict([hidden, subjects], verbose=0)
    export_model(extractor.subject_model, tmp_path / "subjects",
                 outputs=["subject_probabilities", "hidden"])
    export_model(extractor.object_model, tmp_path / "objects", outputs=["object_probabilities"])
    first = read_export(tmp_path, tmp_path / "subjects", batch)
    second = read_export(tmp_path, tmp_path / "objects",
                       {"Input-Hidden": hidden, "Input-Subject": subjects})
    for fmt, tolerance in (("saved_model", 1e-5), ("onnx", 1e-4), ("openvino", 1e-4)):
        np.testing.assert_allclose(first[fmt]["subject_probabilities"], subject_probs,
                                   atol=tolerance, err_msg=fmt)
        np.testing.assert_allclose(second[fmt]["object_probabilities"], object_probs,
                                   atol=tolerance, err_msg=fmt)


def test_saved_model_cli_lists_named_int32_inputs(tmp_path):
    head = SoftmaxTaggingHead(["PER"])
    export_model(head.attach(tiny_encoder()), tmp_path / "export", outputs=head,
                 formats=["saved_model"])
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed beside this Python")
    shown = subprocess.run([cli, "show", "--dir", str(tmp_path / "export" / "saved_model"),
                            "--tag_set", "serve", "--signature_def", "serving_default"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in ("Input-Token", "Input-Segment"):
        block = shown.stdout.split(f"inputs['{name}']")[1].split("inputs[")[0]
        assert "dtype: DT_INT32" in block and "shape: (-1, -1)" in block
    assert "outputs['spans']" in shown.stdout and "outputs['tags']" in shown.stdout
    # `run` loads through TF1's loader, as TF Serving does: the variables must restore.
    ran = subprocess.run([cli, "run", "--dir", str(tmp_path / "export" / "saved_model"),
                          "--tag_set", "serve", "--signature_def", "serving_default",
                          "--input_exprs", "Input-Token=[[2,5,7,3]];Input-Segment=[[0,0,0,0]]"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    tags = ran.stdout.split("Result for output key tags:")[1].split("Result")[0]
    assert len(tags.strip().strip("[]").split()) == 4
    assert not (tmp_path / "export" / "model.onnx").exists()


@pytest.mark.parametrize("tags", [
    [[1, 2, 0, 2, 3], [4, 4, 1, 1, -1]],            # I- alone starts one; B- B- are two
    [[3, 2, 2, 0, 1], [2, 3, 4, 2, 4]],             # I- of another type starts a new one
    [[0, 0, 0, 0, 0], [-1, -1, -1, -1, -1]],        # nothing
])
def test_iob2_span_tensor_reads_like_tags_to_spans(tags):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    expected = sorted((b, s, e, ["PER", "LOC"].index(k)) for b, row in enumerate(tags)
                      for s, e, k in tags_to_spans([names[t] for t in row if t >= 0]))
    got = keras.ops.convert_to_numpy(iob2_span_tensor(np.array(tags, "int32")))
    assert sorted(map(tuple, got.tolist())) == expected


def test_iob2_span_tensor_random_paths():
    names = ["O", "B-A", "I-A", "B-B", "I-B"]
    rng = np.random.default_rng(0)
    tags = rng.integers(0, 5, (50, 12)).astype("int32")
    tags[::3, 8:] = -1
    got = sorted(map(tuple, keras.ops.convert_to_numpy(iob2_span_tensor(tags)).tolist()))
    expected = sorted((b, s, e, ["A", "B"].index(k)) for b, row in enumerate(tags)
                      for s, e, k in tags_to_spans([names[t] for t in row if t >= 0]))
    assert got == expected


def test_export_refuses_before_work_and_keeps_the_previous_export(tmp_path, monkeypatch):
    model = ClassificationHead(2).attach(tiny_encoder())
    with pytest.raises(ValueError, match="formats must be among"):
        export_model(model, tmp_path / "x", formats=["tflite"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a bertkit export"):
        export_model(model, tmp_path / "mine", formats=["saved_model"])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="has 1 output"):
        export_model(model, tmp_path / "x", outputs=["a", "b"], formats=["saved_model"])
    with pytest.raises(TypeError):
        export_model(model, tmp_path / "x", formats=["saved_model"], metadata={"f": object()})
    assert not (tmp_path / "x").exists()

    export_model(model, tmp_path / "export", formats=["saved_model"], metadata={"v": 1})
    with pytest.raises(ValueError, match="overwrite=True"):
        export_model(model, tmp_path / "export", formats=["saved_model"])

    import bertkit.export

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")
    monkeypatch.setattr(bertkit.export, "save_onnx", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_model(model, tmp_path / "export", overwrite=True, metadata={"v": 2})
    manifest = json.loads((tmp_path / "export" / "serving.json").read_text())
    assert manifest["metadata"] == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["export", "mine"]  # no staging left behind
