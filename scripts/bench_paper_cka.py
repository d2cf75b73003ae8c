"""Peak memory and time of P1's CKA at paper scale: ResNet-18 units, N test images, the paper configs' estimator.

What `convergence` + `noisy_vs_clean` cost per replica and kept epoch with the
paper configs' CKA settings (memjax/paper_settings.py: biased linear CKA, full
batch, each unit's N x N Gram accumulated blockwise over example blocks of
`--forward_batch`, centred after accumulation; the debiased value from the
same Grams). The analysis holds at most three models' Grams at once (the
seed's clean final model, the replica's final model and the checkpoint at
hand, `cka_over_training`); `--held` models are formed here one after
another and held, then the last is compared with each of the others (all
unit pairs, biased and debiased; the diagonal is what the analysis keeps).
`--held=1` forms one model's Grams and compares it with itself (self-CKA 1 at
every unit: the check). `--minibatch=1000` measures the minibatch debiased
estimator instead.

Random-init ResNet-18 (width 64, CIFAR 32x32x3, float32) on random uint8
images (normalised with mean 0.5, std 0.25 in [0, 1] pixel units, as memjax's
pipeline expects): the cost does not depend on the weights' or images' values.

    python scripts/bench_paper_cka.py --examples=10000 --held=1 [--granularity=layer]
    python scripts/bench_paper_cka.py --examples=5000 --held=3
Prints JSON: seconds (wall and CPU) per model's Grams and per comparison, peak RSS (MiB), the
planned memory (held Grams and feature blocks).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import time

import jax
import numpy as np

from memjax.analysis.similarity.representations import CkaSettings, GramMaker, compare
from memjax.engine.runner import runner_for
from memjax.models import build_model

IMAGE_SHAPE = (32, 32, 3)


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (robust to other processes on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--examples', type=int, default=10000)
    parser.add_argument('--held', type=int, default=3, help='models whose Grams are held at once (1-3)')
    parser.add_argument('--forward_batch', type=int, default=500, help='examples per block (full batch)')
    parser.add_argument('--minibatch', type=int, default=None, help='minibatch debiased CKA instead')
    parser.add_argument('--granularity', default='layer', choices=('stage', 'layer'))
    parser.add_argument('--out', default='bench_paper_cka.json')
    args = parser.parse_args()
    model = build_model('resnet18', 10, 64)
    images = np.random.default_rng(0).integers(0, 256, (args.examples, *IMAGE_SHAPE), dtype=np.uint8)
    estimator = 'linear' if args.minibatch is None else 'debiased'
    settings = CkaSettings(num_examples=args.examples, estimator=estimator, minibatch_size=args.minibatch,
                           forward_batch=args.forward_batch, granularity=args.granularity)
    settings.validate()
    maker = GramMaker(runner_for(model, np.full(3, 0.5), np.full(3, 0.25)), settings)
    need, text = maker.memory(args.held, IMAGE_SHAPE)
    print(f'{settings.describe()}, {len(maker.names)} units: {text}', flush=True)
    held, gram_seconds, gram_cpu_seconds = [], [], []
    for i in range(args.held):
        variables = model.init(jax.random.PRNGKey(i), IMAGE_SHAPE)
        start, cpu = time.perf_counter(), cpu_seconds()
        held.append(maker.grams(variables, images))
        jax.block_until_ready(held[-1])
        gram_seconds.append(round(time.perf_counter() - start, 1))
        gram_cpu_seconds.append(round(cpu_seconds() - cpu, 1))
        print(f'model {i}: Grams in {gram_seconds[-1]} s ({gram_cpu_seconds[-1]} CPU s)', flush=True)
    compare_seconds, results = [], []
    for other in (held[:-1] or held):
        start = time.perf_counter()
        results.append(compare(held[-1], other, settings))
        compare_seconds.append(round(time.perf_counter() - start, 1))
    check = {key: [round(float(x), 4) for x in np.diagonal(value)] for key, value in results[0].items()}
    result = {'date': datetime.date.today().isoformat(), 'backend': jax.default_backend(),
              'device': jax.devices()[0].device_kind, 'examples': args.examples, 'estimator': settings.describe(),
              'forward_batch': args.forward_batch, 'granularity': args.granularity, 'units': len(maker.names),
              'held_models': args.held, 'grams_seconds_per_model': gram_seconds,
              'grams_cpu_seconds_per_model': gram_cpu_seconds, 'load_average': [round(x, 1) for x in os.getloadavg()],
              'compare_seconds': compare_seconds,
              'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              'planned_mib': round(need / 2 ** 20), 'planned': text,
              ('self_cka' if args.held == 1 else 'cka_last_vs_first'): check}
    print(json.dumps(result, indent=2))
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
