#! -*- coding:utf-8 -*-
# bert4keras's examples/task_sentiment_albert.py (sentiment analysis on an ALBERT
# checkpoint), ported to bertkit line by line. Every changed line says why in a
# "bertkit:" comment; everything else is bert4keras's script as it was.
#
#     python examples/bert4keras_port/task_sentiment_albert.py
#
# Paths come from the environment here so that it runs on this repository's data
# (ALBERT_DIR, SENTIMENT_DIR, EPOCHS, and MODEL=bert for a Google BERT directory in
# ALBERT_DIR); bert4keras hard-codes them. Without ALBERT_DIR a small RANDOM ALBERT is
# written first (no pretrained weights can be downloaded here), which learns the task
# from scratch: expect naive-Bayes-level accuracy, not ALBERT's.

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import quiet  # noqa: E402,F401  bertkit: TensorFlow's start-up log off, as in every example

import keras  # noqa: E402  bertkit: Keras 3 itself (bert4keras.backend picked keras or tf.keras)
import numpy as np  # noqa: E402
from bertkit.tokenizers import Tokenizer  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.optimizers import Adam, extend_with_piecewise_linear_lr  # noqa: E402
from bertkit.data import sequence_padding, DataGenerator  # noqa: E402  bertkit: snippets -> data
from bertkit.layers import TakeToken  # noqa: E402  bertkit: a registered layer, not a Lambda
from bertkit.storage import save_weights_atomically  # noqa: E402  bertkit: a kill keeps the best
from keras.layers import Dense  # noqa: E402

# bertkit: no set_gelu('tanh'): the config says "gelu_tanh" (Google's approximation) or
# "gelu" (exact) per model, so two models in one process can differ.

num_classes = 2
maxlen = 128
batch_size = 32
here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(os.path.dirname(here))
shared = os.environ.get('BERTKIT_SHARED_DATA', os.path.join(repo, '..', 'shared', 'data'))
data_dir = os.environ.get('SENTIMENT_DIR', os.path.join(shared, 'sentiment'))
albert_dir = os.environ.get('ALBERT_DIR', os.path.join(repo, 'checkpoints', 'albert_random'))
epochs = int(os.environ.get('EPOCHS', 10))
model_name = os.environ.get('MODEL', 'albert')  # bertkit: MODEL=bert reads a Google BERT dir
prefix = 'albert' if model_name.startswith('albert') else 'bert'
config_path = os.path.join(albert_dir, prefix + '_config.json')
checkpoint_path = os.path.join(albert_dir, prefix + '_model.ckpt')
dict_path = os.path.join(albert_dir, 'vocab.txt')

if not os.path.exists(checkpoint_path + '.index') and prefix != 'albert':
    sys.exit('no checkpoint %s.index (ALBERT_DIR with MODEL=%s)' % (checkpoint_path, model_name))
if not os.path.exists(checkpoint_path + '.index'):  # bertkit: no download here
    from bertkit.checkpoints import save_checkpoint_dir
    keras.utils.set_random_seed(0)
    builder = build_transformer_model(
        vocab_size=Tokenizer(os.path.join(shared, 'vocab', 'chinese_vocab.txt')).vocab_size,
        embedding_size=128, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, hidden_act='gelu_tanh', model='albert',
        return_keras_model=False)
    save_checkpoint_dir(builder, albert_dir,
                        vocab_path=os.path.join(shared, 'vocab', 'chinese_vocab.txt'))
    os.replace(os.path.join(albert_dir, 'bert_config.json'), config_path)
    for suffix in ('.index', '.data-00000-of-00001'):
        os.replace(os.path.join(albert_dir, 'bert_model.ckpt' + suffix), checkpoint_path + suffix)
    print('NOTE: wrote a RANDOM ALBERT to %s (no pretrained weights here)' % albert_dir)


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
train_data = load_data(os.path.join(data_dir, 'sentiment.train.data'))
valid_data = load_data(os.path.join(data_dir, 'sentiment.valid.data'))
test_data = load_data(os.path.join(data_dir, 'sentiment.test.data'))

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
    model=model_name,  # bertkit: was 'albert' (see MODEL above)
    return_keras_model=False,
)

output = TakeToken(index=0, name='CLS-token')(bert.model.output)  # bertkit: was Lambda(x[:, 0])
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
    optimizer=AdamLR(learning_rate=1e-4, lr_schedule={
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
        y_pred = model.predict(x_true, verbose=0).argmax(axis=1)  # bertkit: no bar a batch
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


weights_path = os.path.join(albert_dir, 'best_model.weights.h5')  # bertkit: Keras 3 names it


class Evaluator(keras.callbacks.Callback):
    """评估与保存
    """
    def __init__(self):
        super().__init__()  # bertkit: Keras 3 callbacks need their own __init__
        self.best_val_acc = 0.

    def on_epoch_end(self, epoch, logs=None):
        val_acc = evaluate(valid_generator)
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            save_weights_atomically(model, weights_path)  # bertkit: was model.save_weights
        test_acc = evaluate(test_generator)
        print(
            u'val_acc: %.5f, best_val_acc: %.5f, test_acc: %.5f\n' %
            (val_acc, self.best_val_acc, test_acc)
        )


if __name__ == '__main__':

    evaluator = Evaluator()

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
        shuffle=False,  # bertkit: the generator shuffles; Keras 3 warns on shuffle=True
        verbose=1 if sys.stdout.isatty() else 2,  # bertkit: a line an epoch in a log file
    )

    model.load_weights(weights_path)
    print(u'final test acc: %05f\n' % (evaluate(test_generator)))

else:

    model.load_weights(weights_path)
