#! -*- coding: utf-8 -*-
"""Peer run: bert4keras's own BERT+CRF Chinese NER example, on MSRA data.

What it is
    The example script ``examples/task_sequence_labeling_ner_crf.py`` of bert4keras
    0.11.5 (https://github.com/bojone/bert4keras, Apache License 2.0 as the repository's
    setup.py and LICENSE say; (c) bojone), changed as little as possible so it runs
    here, to be compared with bertkit's own NER example. Its model (BERT + Dense +
    ConditionalRandomField with lr_multiplier), its data generator, its
    NamedEntityRecognizer / ViterbiDecoder decoding and its evaluate() are kept as
    they are. It is not part of bertkit and needs its own virtualenv: bert4keras runs
    only on tf-keras (Keras 2), with TF_USE_LEGACY_KERAS=1 TF_KERAS=1.

Setup (once; bert4keras's setup.py asks for keras<=2.3.1, hence --no-deps, and tf-keras
asks for the full `tensorflow` wheel, hence --no-deps there too)
    python3 -m venv /work/b4k-venv
    /work/b4k-venv/bin/pip install tensorflow-cpu==2.21.0 numpy tqdm
    /work/b4k-venv/bin/pip install --no-deps tf-keras==2.21.0 bert4keras==0.11.5

Run (from the repository root)
    TF_USE_LEGACY_KERAS=1 TF_KERAS=1 /work/b4k-venv/bin/python \\
        benchmarks/peer_bert4keras_ner_crf.py --data-dir ../shared/data/ner_msra \\
        --config CKPT/bert_config.json --checkpoint CKPT/bert_model.ckpt \\
        --vocab CKPT/vocab.txt --epochs 10 --lr 1e-4 [--max-train N] [--max-minutes M]

What was changed from the original, and nothing else
 1. Settings come from the command line instead of constants: --data-dir (files
    msra.train.txt and msra.valid.txt), --config/--checkpoint/--vocab, --epochs (10),
    --maxlen (256), --batch-size (32), --lr (2e-5), --crf-lr-multiplier (1000); the
    defaults are the original's. ``bert_layers`` (12 in the original) is read from the
    config's num_hidden_layers, so the CRF sits on the last layer as in the original.
 2. load_data(): the separator is a TAB (the original split on a space, for the
    china-people-daily files); empty lines are skipped; an I- tag with no open entity
    (2 sentences of msra.train.txt start with I-PER) opens a new entity, where the
    original crashed (``d[-1][1] = i`` on the text string). There is no test split:
    the original's test-set evaluation each epoch is left out.
 3. Optional additions: --max-train N (first N training sentences), --max-valid N
    (first N validation sentences), --max-minutes M (stop after the epoch in which M
    minutes of wall time since the start of training have passed), --seed,
    --save-weights PATH (the original always wrote ./best_model.weights; here only when
    asked). The module-level ``else: model.load_weights(...)`` branch for importing
    the script is left out, and so are the original's opening comment (dataset URL
    for china-people-daily; "valid F1 96.48%, test F1 95.38%" with Google's Chinese
    BERT-base) and its string note on how to switch to ALBERT.
 4. Compatibility with tf-keras 2.21 (one monkeypatch, no edit of site-packages):
    bert4keras.optimizers subclasses ``keras.optimizers.Optimizer``, which since
    tf-keras 2.11 is the new optimizer class without _set_hyper/add_slot; it is
    pointed at ``keras.optimizers.legacy.Optimizer`` (OptimizerV2, the class bert4keras
    was written for) while bert4keras.optimizers is imported, then restored.
 5. Measurement: after build, every checkpoint variable the BERT mapping names is
    checked present and equal to the loaded weight. recognize() calls model.predict
    with verbose=0 (under the TF 2.x of 2020 that was predict's default; tf-keras 2.21
    would print a progress bar for every sentence). recognize() also keeps its token
    labels and mapping so that evaluate() computes, beside the example's own figure,
    exact (start, end, type) span micro P/R/F1 under the CoNLL (conlleval) chunking
    rule against the gold spans read from the tag column, per type and overall. Each
    epoch prints one line with both F1 figures, wall seconds and training seconds;
    the run ends with ``RESULT {json}``.

The example's own F1 (kept as is): sets of (start, end, type) character spans,
X/Y/Z counts started at 1e-10, predicted spans from its own decoding (a B-X label opens
an entity, any following I label, whatever its type, extends it, an I after O is
dropped), gold spans from load_data (an I of another type would extend the open entity
too). The CoNLL figure differs only there: an I-Y after B-X/I-X or after O opens a new
Y entity, and gold comes straight from the IOB2 column.
"""

import os
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')  # bert4keras needs tf-keras (Keras 2)
os.environ.setdefault('TF_KERAS', '1')

import argparse
import json
import time
from collections import defaultdict

parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
parser.add_argument('--data-dir', default='../shared/data/ner_msra',
                    help='holds msra.train.txt and msra.valid.txt (char<TAB>tag)')
parser.add_argument('--config', required=True, help='bert_config.json')
parser.add_argument('--checkpoint', required=True, help='bert_model.ckpt prefix')
parser.add_argument('--vocab', required=True, help='vocab.txt')
parser.add_argument('--epochs', type=int, default=10)
parser.add_argument('--maxlen', type=int, default=256)
parser.add_argument('--batch-size', type=int, default=32)
parser.add_argument('--lr', type=float, default=2e-5)
parser.add_argument('--crf-lr-multiplier', type=float, default=1000)
parser.add_argument('--max-train', type=int, default=None,
                    help='use only the first N training sentences')
parser.add_argument('--max-valid', type=int, default=None,
                    help='use only the first N validation sentences')
parser.add_argument('--max-minutes', type=float, default=None,
                    help='stop after the epoch in which this wall time is passed')
parser.add_argument('--seed', type=int, default=None)
parser.add_argument('--save-weights', default=None,
                    help='save the best weights here (the original: ./best_model.weights)')
args = parser.parse_args()

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras, K
from _bert4keras_peer import import_bert4keras_optimizers, check_checkpoint_loaded
(Adam,) = import_bert4keras_optimizers(keras, 'Adam')  # change 4
from bert4keras.models import build_transformer_model
from bert4keras.tokenizers import Tokenizer
from bert4keras.snippets import sequence_padding, DataGenerator
from bert4keras.snippets import open, ViterbiDecoder, to_array
from bert4keras.layers import ConditionalRandomField
from keras.layers import Dense
from keras.models import Model
from tqdm import tqdm

if args.seed is not None:
    import random
    random.seed(args.seed)
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)

maxlen = args.maxlen
epochs = args.epochs
batch_size = args.batch_size
learning_rate = args.lr  # bert_layers越小，学习率应该要越大
crf_lr_multiplier = args.crf_lr_multiplier  # 必要时扩大CRF层的学习率
categories = set()

# bert配置
config_path = args.config
checkpoint_path = args.checkpoint
dict_path = args.vocab
with open(config_path, encoding='utf-8') as f:
    bert_layers = json.load(f)['num_hidden_layers']


def load_data(filename):
    """加载数据
    单条格式：[text, (start, end, label), (start, end, label), ...]，
              意味着text[start:end + 1]是类型为label的实体。
    """
    D = []
    with open(filename, encoding='utf-8') as f:
        f = f.read()
        for l in f.split('\n\n'):
            if not l.strip():
                continue
            d = ['']
            for i, c in enumerate([c for c in l.split('\n') if c]):
                char, flag = c.split('\t')
                d[0] += char
                if flag[0] == 'B' or (flag[0] == 'I' and len(d) == 1):
                    d.append([i, i, flag[2:]])
                    categories.add(flag[2:])
                elif flag[0] == 'I':
                    d[-1][1] = i
            D.append(d)
    return D


def load_tags(filename):
    """(added) the gold IOB2 tag column of each sentence, for the CoNLL span score"""
    with open(filename, encoding='utf-8') as f:
        blocks = [l for l in f.read().split('\n\n') if l.strip()]
    return [[c.split('\t')[1] for c in l.split('\n') if c] for l in blocks]


# 标注数据
train_file = os.path.join(args.data_dir, 'msra.train.txt')
valid_file = os.path.join(args.data_dir, 'msra.valid.txt')
train_data = load_data(train_file)
valid_data = load_data(valid_file)
valid_tags = load_tags(valid_file)
assert len(valid_tags) == len(valid_data)
if args.max_train:
    train_data = train_data[:args.max_train]
if args.max_valid:
    valid_data, valid_tags = valid_data[:args.max_valid], valid_tags[:args.max_valid]
categories = list(sorted(categories))
print('train sentences: %d, valid sentences: %d, categories: %s, bert_layers: %d' %
      (len(train_data), len(valid_data), categories, bert_layers))

# 建立分词器
tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """数据生成器
    """
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, d in self.sample(random):
            tokens = tokenizer.tokenize(d[0], maxlen=maxlen)
            mapping = tokenizer.rematch(d[0], tokens)
            start_mapping = {j[0]: i for i, j in enumerate(mapping) if j}
            end_mapping = {j[-1]: i for i, j in enumerate(mapping) if j}
            token_ids = tokenizer.tokens_to_ids(tokens)
            segment_ids = [0] * len(token_ids)
            labels = np.zeros(len(token_ids))
            for start, end, label in d[1:]:
                if start in start_mapping and end in end_mapping:
                    start = start_mapping[start]
                    end = end_mapping[end]
                    labels[start] = categories.index(label) * 2 + 1
                    labels[start + 1:end + 1] = categories.index(label) * 2 + 2
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append(labels)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


bert = build_transformer_model(
    config_path,
    checkpoint_path,
    return_keras_model=False,  # (changed) keep the BERT object for the load check
)
model = bert.model

check_checkpoint_loaded(bert, checkpoint_path, K)  # (added) see docstring

output_layer = 'Transformer-%s-FeedForward-Norm' % (bert_layers - 1)
output = model.get_layer(output_layer).output
output = Dense(len(categories) * 2 + 1)(output)
CRF = ConditionalRandomField(lr_multiplier=crf_lr_multiplier)
output = CRF(output)

model = Model(model.input, output)
model.summary()

model.compile(
    loss=CRF.sparse_loss,
    optimizer=Adam(learning_rate),
    metrics=[CRF.sparse_accuracy]
)


class NamedEntityRecognizer(ViterbiDecoder):
    """命名实体识别器
    """
    def recognize(self, text):
        tokens = tokenizer.tokenize(text, maxlen=512)
        mapping = tokenizer.rematch(text, tokens)
        token_ids = tokenizer.tokens_to_ids(tokens)
        segment_ids = [0] * len(token_ids)
        token_ids, segment_ids = to_array([token_ids], [segment_ids])
        nodes = model.predict([token_ids, segment_ids], verbose=0)[0]  # (changed) verbose=0
        labels = self.decode(nodes)
        self.last_labels, self.last_mapping = labels, mapping  # (added)
        entities, starting = [], False
        for i, label in enumerate(labels):
            if label > 0:
                if label % 2 == 1:
                    starting = True
                    entities.append([[i], categories[(label - 1) // 2]])
                elif starting:
                    entities[-1][0].append(i)
                else:
                    starting = False
            else:
                starting = False
        return [(mapping[w[0]][0], mapping[w[-1]][-1], l) for w, l in entities]


NER = NamedEntityRecognizer(trans=K.eval(CRF.trans), starts=[0], ends=[0])


def conll_spans(tags):
    """(added) exact (start, end, type) chunks of an IOB tag list, conlleval's rule"""
    spans, start, kind = [], None, None
    for i, t in enumerate(list(tags) + ['O']):
        prefix, t_kind = (t[0], t[2:]) if t != 'O' else ('O', None)
        if start is not None and (prefix in 'BO' or t_kind != kind):
            spans.append((start, i - 1, kind))
            start = None
        if prefix == 'B' or (prefix == 'I' and start is None):
            start, kind = i, t_kind
    return spans


def char_tags(text, labels, mapping):
    """(added) the model's token labels as one IOB tag per character"""
    tags = ['O'] * len(text)
    for label, chars in zip(labels, mapping):
        if label > 0 and chars:
            kind = categories[(label - 1) // 2]
            tags[chars[0]] = ('B-' if label % 2 == 1 else 'I-') + kind
            for c in chars[1:]:
                tags[c] = 'I-' + kind
    return tags


def prf(tp, n_pred, n_gold):
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {'precision': p, 'recall': r, 'f1': 2 * p * r / (p + r) if p + r else 0.0,
            'tp': tp, 'pred': n_pred, 'gold': n_gold}


def evaluate(data, gold_tags=None):
    """评测函数
    (added: with gold_tags, also the CoNLL-rule span scores, returned 4th)
    """
    X, Y, Z = 1e-10, 1e-10, 1e-10
    counts = defaultdict(lambda: [0, 0, 0])  # type -> tp, pred, gold (CoNLL rule)
    for k, d in enumerate(tqdm(data, ncols=100)):
        R = set(NER.recognize(d[0]))
        T = set([tuple(i) for i in d[1:]])
        X += len(R & T)
        Y += len(R)
        Z += len(T)
        if gold_tags is not None:
            P = set(conll_spans(char_tags(d[0], NER.last_labels, NER.last_mapping)))
            G = set(conll_spans(gold_tags[k]))
            for kinds, i in ((P & G, 0), (P, 1), (G, 2)):
                for span in kinds:
                    counts[span[2]][i] += 1
    f1, precision, recall = 2 * X / (Y + Z), X / Y, X / Z
    if gold_tags is None:
        return f1, precision, recall
    span = {t: prf(*counts[t]) for t in sorted(counts)}
    span['overall'] = prf(*[sum(c[i] for c in counts.values()) for i in range(3)])
    return f1, precision, recall, span


class Evaluator(keras.callbacks.Callback):
    """评估与保存
    """
    def __init__(self):
        self.best_val_f1 = 0
        self.best_span_f1, self.best_span, self.best_epoch, self.best_span_epoch = 0, None, 0, 0
        self.train_seconds, self.epochs_run, self.history = 0.0, 0, []

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        epoch_train_seconds = time.time() - self.epoch_t0
        self.train_seconds += epoch_train_seconds
        self.epochs_run = epoch + 1
        trans = K.eval(CRF.trans)
        NER.trans = trans
        print(NER.trans)
        eval_t0 = time.time()
        f1, precision, recall, span = evaluate(valid_data, valid_tags)
        eval_seconds = time.time() - eval_t0
        # 保存最优
        if f1 >= self.best_val_f1:
            self.best_val_f1 = f1
            self.best_epoch = epoch + 1
            if args.save_weights:
                model.save_weights(args.save_weights)
        if span['overall']['f1'] >= self.best_span_f1:
            self.best_span_f1, self.best_span = span['overall']['f1'], span
            self.best_span_epoch = epoch + 1
        print(
            'valid:  f1: %.5f, precision: %.5f, recall: %.5f, best f1: %.5f\n' %
            (f1, precision, recall, self.best_val_f1)
        )
        wall = time.time() - self.t0
        print('EPOCH %d wall_s %.1f train_s %.1f (this epoch %.1f, %.2f sentences/s) '
              'eval_s %.1f loss %.4f f1_example %.5f f1_span %.5f (P %.5f R %.5f) %s' %
              (epoch + 1, wall, self.train_seconds, epoch_train_seconds,
               len(train_data) / epoch_train_seconds, eval_seconds,
               (logs or {}).get('loss', float('nan')), f1, span['overall']['f1'],
               span['overall']['precision'], span['overall']['recall'],
               ' '.join('%s %.4f' % (t, s['f1']) for t, s in span.items()
                        if t != 'overall')), flush=True)
        self.history.append({'epoch': epoch + 1, 'wall_seconds': round(wall, 1),
                             'train_seconds': round(epoch_train_seconds, 1),
                             'eval_seconds': round(eval_seconds, 1),
                             'f1_example': f1, 'f1_span': span['overall']['f1']})
        if args.max_minutes is not None and wall > args.max_minutes * 60:
            print('max-minutes passed (%.1f min): stopping' % (wall / 60))
            self.model.stop_training = True


if __name__ == '__main__':

    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

    # (added) the summary line for the comparison
    steps = len(train_generator)
    print('RESULT ' + json.dumps({
        'peer': 'bert4keras 0.11.5 examples/task_sequence_labeling_ner_crf.py',
        'best_f1_example': evaluator.best_val_f1,
        'best_epoch_example': evaluator.best_epoch,
        'best_f1_span': evaluator.best_span_f1,
        'best_epoch_span': evaluator.best_span_epoch,
        'best_span_scores': evaluator.best_span,
        'epochs': evaluator.epochs_run,
        'minutes': round((time.time() - evaluator.t0) / 60, 2),
        'train_seconds': round(evaluator.train_seconds, 1),
        'train_sentences_per_second': round(
            len(train_data) * evaluator.epochs_run / max(evaluator.train_seconds, 1e-9), 2),
        'n_train': len(train_data), 'n_valid': len(valid_data),
        'bert_layers': bert_layers, 'maxlen': maxlen, 'batch_size': batch_size,
        'lr': learning_rate, 'crf_lr_multiplier': crf_lr_multiplier,
        'history': evaluator.history,
    }))
