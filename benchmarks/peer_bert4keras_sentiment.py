#! -*- coding:utf-8 -*-
"""Peer run: bert4keras's own sentiment example, on the sentiment corpus.

What it is
    The example script ``examples/task_sentiment_albert.py`` of bert4keras 0.11.5
    (https://github.com/bojone/bert4keras, Apache License 2.0 as the repository's
    setup.py and LICENSE say; (c) bojone), changed as little as possible so it runs here,
    to be compared with bertkit's sentiment example and with bertkit's line-by-line port
    of the same script (``examples/bert4keras_port/task_sentiment_albert.py``) on the
    same checkpoint. Its model ([CLS] -> Dense softmax), its data generator, its
    piecewise-linear Adam (lr 1e-4, {1000: 1, 2000: 0.1}), 10 epochs and its evaluate()
    are kept as they are. It is not part of bertkit and needs its own virtualenv:
    bert4keras runs only on tf-keras (Keras 2), with TF_USE_LEGACY_KERAS=1 TF_KERAS=1.

Setup (once; see peer_bert4keras_ner_crf.py for why --no-deps)
    python3 -m venv /work/b4k-venv
    /work/b4k-venv/bin/pip install tensorflow-cpu==2.21.0 numpy tqdm
    /work/b4k-venv/bin/pip install --no-deps tf-keras==2.21.0 bert4keras==0.11.5

Run (from the repository root)
    TF_USE_LEGACY_KERAS=1 TF_KERAS=1 /work/b4k-venv/bin/python \\
        benchmarks/peer_bert4keras_sentiment.py --data-dir ../shared/data/sentiment \\
        --model bert --config CKPT/bert_config.json --checkpoint CKPT/bert_model.ckpt \\
        --vocab CKPT/vocab.txt [--epochs 10] [--max-minutes M] [--seed S]

What was changed from the original, and nothing else
 1. Settings come from the command line instead of constants: --data-dir (files
    sentiment.{train,valid,test}.data), --model (albert, the original's; bert for a
    Google BERT checkpoint), --config/--checkpoint/--vocab, --epochs (10), --maxlen
    (128), --batch-size (32), --lr (1e-4); the defaults are the original's.
    ``set_gelu('tanh')`` is kept: every "gelu" of the config runs as the tanh form.
 2. Compatibility with tf-keras 2.21 (one monkeypatch, no edit of site-packages):
    bert4keras.optimizers subclasses ``keras.optimizers.Optimizer``, which since
    tf-keras 2.11 is the new optimizer class without _set_hyper/add_slot; it is pointed
    at ``keras.optimizers.legacy.Optimizer`` while bert4keras.optimizers is imported,
    then restored.
 3. Optional additions: --max-minutes M (stop after the epoch in which M minutes of
    wall time since the start of training have passed), --seed, --save-weights PATH
    (the original always wrote ./best_model.weights; here only when asked). The
    module-level ``else: model.load_weights(...)`` branch for importing the script is
    left out; with no --save-weights the final test accuracy is that of the best
    validation epoch, as recorded at that epoch (the original reloads those weights
    and evaluates again: the same figure).
 4. Measurement: after build, every checkpoint variable the model's mapping names is
    checked present and equal to the loaded weight. evaluate() calls model.predict with
    verbose=0 (under the TF 2.x of 2020 that was predict's default; tf-keras 2.21 would
    print a progress bar for every batch). Each epoch prints one line with the
    validation and test accuracy, wall seconds and training seconds; the run ends with
    ``RESULT {json}``.
"""

import os
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')  # bert4keras needs tf-keras (Keras 2)
os.environ.setdefault('TF_KERAS', '1')

import argparse
import json
import time

parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
parser.add_argument('--data-dir', default='../shared/data/sentiment',
                    help='holds sentiment.train.data, .valid.data, .test.data (text<TAB>label)')
parser.add_argument('--model', default='albert', help="bert4keras's model name: albert, bert")
parser.add_argument('--config', required=True, help='albert_config.json / bert_config.json')
parser.add_argument('--checkpoint', required=True, help='checkpoint prefix')
parser.add_argument('--vocab', required=True, help='vocab.txt')
parser.add_argument('--epochs', type=int, default=10)
parser.add_argument('--maxlen', type=int, default=128)
parser.add_argument('--batch-size', type=int, default=32)
parser.add_argument('--lr', type=float, default=1e-4)
parser.add_argument('--max-minutes', type=float, default=None,
                    help='stop after the epoch in which this wall time is passed')
parser.add_argument('--seed', type=int, default=None)
parser.add_argument('--save-weights', default=None,
                    help='save the best weights here (the original: ./best_model.weights)')
args = parser.parse_args()

import numpy as np
import tensorflow as tf
from bert4keras.backend import keras, set_gelu, K
from _bert4keras_peer import import_bert4keras_optimizers, check_checkpoint_loaded
Adam, extend_with_piecewise_linear_lr = import_bert4keras_optimizers(  # change 2
    keras, 'Adam', 'extend_with_piecewise_linear_lr')
from bert4keras.tokenizers import Tokenizer
from bert4keras.models import build_transformer_model
from bert4keras.snippets import sequence_padding, DataGenerator
from bert4keras.snippets import open
from keras.layers import Lambda, Dense

if args.seed is not None:
    import random
    random.seed(args.seed)
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)

set_gelu('tanh')  # 切换gelu版本

num_classes = 2
maxlen = args.maxlen
batch_size = args.batch_size
config_path = args.config
checkpoint_path = args.checkpoint
dict_path = args.vocab


def load_data(filename):
    """加载数据
    单条格式：(文本, 标签id)
    """
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            text, label = l.strip().split('\t')
            D.append((text, int(label)))
    return D


# 加载数据集
train_data = load_data(os.path.join(args.data_dir, 'sentiment.train.data'))
valid_data = load_data(os.path.join(args.data_dir, 'sentiment.valid.data'))
test_data = load_data(os.path.join(args.data_dir, 'sentiment.test.data'))

# 建立分词器
tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """数据生成器
    """
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


# 加载预训练模型
bert = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    model=args.model,
    return_keras_model=False,
)

check_checkpoint_loaded(bert, checkpoint_path, K)  # (added) see docstring

output = Lambda(lambda x: x[:, 0], name='CLS-token')(bert.model.output)
output = Dense(
    units=num_classes,
    activation='softmax',
    kernel_initializer=bert.initializer
)(output)

model = keras.models.Model(bert.model.input, output)
model.summary()

# 派生为带分段线性学习率的优化器。
# 其中name参数可选，但最好填入，以区分不同的派生优化器。
AdamLR = extend_with_piecewise_linear_lr(Adam, name='AdamLR')

model.compile(
    loss='sparse_categorical_crossentropy',
    # optimizer=Adam(1e-5),  # 用足够小的学习率
    optimizer=AdamLR(learning_rate=args.lr, lr_schedule={
        1000: 1,
        2000: 0.1
    }),
    metrics=['accuracy'],
)

# 转换数据集
train_generator = data_generator(train_data, batch_size)
valid_generator = data_generator(valid_data, batch_size)
test_generator = data_generator(test_data, batch_size)


def evaluate(data):
    total, right = 0., 0.
    for x_true, y_true in data:
        y_pred = model.predict(x_true, verbose=0).argmax(axis=1)  # (changed) verbose=0
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


class Evaluator(keras.callbacks.Callback):
    """评估与保存
    """
    def __init__(self):
        self.best_val_acc = 0.
        self.best_test_acc, self.best_epoch = 0., 0  # (added) test at the best val epoch
        self.train_seconds, self.epochs_run, self.history = 0.0, 0, []

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        epoch_train_seconds = time.time() - self.epoch_t0
        self.train_seconds += epoch_train_seconds
        self.epochs_run = epoch + 1
        val_acc = evaluate(valid_generator)
        test_acc = evaluate(test_generator)  # (moved up: recorded with the best epoch)
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_test_acc, self.best_epoch = test_acc, epoch + 1
            if args.save_weights:
                model.save_weights(args.save_weights)
        print(
            u'val_acc: %.5f, best_val_acc: %.5f, test_acc: %.5f\n' %
            (val_acc, self.best_val_acc, test_acc)
        )
        wall = time.time() - self.t0
        print('EPOCH %d wall_s %.1f train_s %.1f (this epoch %.1f, %.2f texts/s) loss %.4f '
              'val_acc %.5f test_acc %.5f' %
              (epoch + 1, wall, self.train_seconds, epoch_train_seconds,
               len(train_data) / epoch_train_seconds, (logs or {}).get('loss', float('nan')),
               val_acc, test_acc), flush=True)
        self.history.append({'epoch': epoch + 1, 'wall_seconds': round(wall, 1),
                             'train_seconds': round(epoch_train_seconds, 1),
                             'val_acc': val_acc, 'test_acc': test_acc})
        if args.max_minutes is not None and wall > args.max_minutes * 60:
            print('max-minutes passed (%.1f min): stopping' % (wall / 60))
            self.model.stop_training = True


if __name__ == '__main__':

    evaluator = Evaluator()

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=args.epochs,
        callbacks=[evaluator]
    )

    print(u'final test acc: %05f\n' % evaluator.best_test_acc)  # (changed) see docstring 3
    print('RESULT ' + json.dumps({
        'peer': 'bert4keras 0.11.5 examples/task_sentiment_albert.py',
        'model': args.model,
        'best_val_acc': evaluator.best_val_acc,
        'test_acc_at_best_val': evaluator.best_test_acc,
        'best_epoch': evaluator.best_epoch,
        'epochs': evaluator.epochs_run,
        'minutes': round((time.time() - evaluator.t0) / 60, 2),
        'train_seconds': round(evaluator.train_seconds, 1),
        'n_train': len(train_data), 'n_valid': len(valid_data), 'n_test': len(test_data),
        'maxlen': maxlen, 'batch_size': batch_size, 'lr': args.lr,
        'history': evaluator.history,
    }))
