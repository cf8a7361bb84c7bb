"""Peer timing: bert4keras 0.11.5's ViterbiDecoder, one sentence at a time.

bert4keras's CRF NER example (examples/task_sequence_labeling_ner_crf.py) decodes each
sentence with ``bert4keras.snippets.ViterbiDecoder.decode(nodes)`` (numpy, nodes of
shape [T, K]) after model.predict. This script times only that decode call, on random
emission matrices and a random transition matrix, and can save the inputs and decoded
paths so another process (bertkit's decoder) can check that the paths agree.
It runs in the bert4keras virtualenv (see peer_bert4keras_ner_crf.py), e.g.

    TF_USE_LEGACY_KERAS=1 TF_KERAS=1 /work/b4k-venv/bin/python \\
        benchmarks/peer_bert4keras_viterbi.py --sentences 2000 --length 46 --tags 7 \\
        --seed 0 --npz /tmp/viterbi_in.npz --out /tmp/viterbi_paths.npz

--npz PATH: if PATH exists, the inputs are read from it (then --sentences/--length/
--tags/--seed are ignored); otherwise they are generated from --seed and written there.
The input file holds ``emissions`` float32 [N, T, K] (padded when ``lengths`` differ),
``lengths`` int32 [N], ``transitions`` float32 [K, K]. --out PATH writes ``paths``
int32 [N, T] (-1 past each length), ``lengths``, and ``starts_ends_o`` (1 if the
example's constraint was applied).

By default decoding is plain Viterbi (no start/end constraint): the score of a path is
sum_t emissions[t, y_t] + sum_t transitions[y_t, y_t+1], the maximum taken. With
--starts-ends-o the example's ``starts=[0], ends=[0]`` is applied (first and last tag
forced to 0, which is how the example pins [CLS] and [SEP] to O).
"""
import os
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse
import json
import statistics
import time

import numpy as np


def make_inputs(sentences, length, tags, seed):
    rng = np.random.default_rng(seed)
    emissions = rng.normal(0.0, 2.0, size=(sentences, length, tags)).astype(np.float32)
    transitions = rng.normal(0.0, 1.0, size=(tags, tags)).astype(np.float32)
    lengths = np.full(sentences, length, dtype=np.int32)
    return emissions, lengths, transitions


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sentences', type=int, default=2000)
    p.add_argument('--length', type=int, default=46,
                   help='T (46: about the mean token count of MSRA sentences with [CLS]/[SEP])')
    p.add_argument('--tags', type=int, default=7, help='K (7: O and B/I of 3 types)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--repeats', type=int, default=3, help='timed passes; the best counts')
    p.add_argument('--starts-ends-o', action='store_true',
                   help="apply the example's starts=[0], ends=[0]")
    p.add_argument('--npz', default=None, help='read inputs from here, or write them here')
    p.add_argument('--out', default=None, help='write the decoded paths here')
    args = p.parse_args()

    import bert4keras
    from bert4keras.snippets import ViterbiDecoder

    if args.npz and os.path.exists(args.npz):
        z = np.load(args.npz)
        emissions, transitions = z['emissions'], z['transitions']
        lengths = z['lengths'] if 'lengths' in z else np.full(
            len(emissions), emissions.shape[1], dtype=np.int32)
        source = 'loaded ' + args.npz
    else:
        emissions, lengths, transitions = make_inputs(
            args.sentences, args.length, args.tags, args.seed)
        source = 'generated (seed %d)' % args.seed
        if args.npz:
            np.savez(args.npz, emissions=emissions, lengths=lengths,
                     transitions=transitions)
            source += ', written to ' + args.npz
    n, t_max, k = emissions.shape

    if args.starts_ends_o:
        decoder = ViterbiDecoder(trans=transitions, starts=[0], ends=[0])
    else:
        decoder = ViterbiDecoder(trans=transitions)

    timings, paths = [], None
    for _ in range(max(1, args.repeats)):
        # decode() edits nodes in place (the -inf of the constraint): fresh copies,
        # as model.predict gives the example a fresh array for every sentence
        nodes = [emissions[i, :lengths[i]].copy() for i in range(n)]
        t0 = time.perf_counter()
        decoded = [decoder.decode(x) for x in nodes]
        timings.append(time.perf_counter() - t0)
        if paths is None:
            paths = np.full((n, t_max), -1, dtype=np.int32)
            for i, path in enumerate(decoded):
                paths[i, :len(path)] = path

    if args.out:
        np.savez(args.out, paths=paths, lengths=lengths,
                 starts_ends_o=np.int32(bool(args.starts_ends_o)))

    best = min(timings)
    print('RESULT ' + json.dumps({
        'peer': 'bert4keras %s snippets.ViterbiDecoder' % bert4keras.__version__,
        'sentences_per_second': round(n / best, 1),
        'sentences_per_second_median': round(n / statistics.median(timings), 1),
        'seconds_best': round(best, 4),
        'seconds_all': [round(s, 4) for s in timings],
        'sentences': int(n), 'max_length': int(t_max),
        'mean_length': float(np.mean(lengths)), 'tags': int(k),
        'starts_ends_o': bool(args.starts_ends_o), 'inputs': source,
        'out': args.out, 'numpy': np.__version__,
    }))


if __name__ == '__main__':
    main()
