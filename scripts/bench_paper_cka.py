"""Peak memory and time of P1's CKA pass at paper scale: R ResNet-18 replicas x all stages (or layers), N test images.

What one kept epoch of `convergence` + `noisy_vs_clean` costs with the paper
configs' CKA settings (memjax/paper_settings.py: minibatch debiased CKA,
batches of 1000): the final Grams of every target replica are formed once and
held ([L, b, b] per batch), then every replica's stages at the epoch are
captured batch by batch, their Grams formed, and the same-stage HSIC sums
accumulated. Random-init ResNet-18 (width 64, CIFAR 32x32x3, float32) on
random uint8 images (normalised with mean 0.5, std 0.25 in [0, 1] pixel
units, as memjax's pipeline expects): the cost does not depend on the
weights' or images' values. The self-CKA of replica 0 (every entry 1) checks
the pass.

    python scripts/bench_paper_cka.py --replicas=8 --examples=10000 [--granularity=layer]
Prints JSON: seconds for the final Grams and for one epoch's pass, peak RSS (MiB).
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.similarity.cka import hsic_scale
from memjax.analysis.similarity.representations import CkaSettings, GramMaker
from memjax.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--replicas', type=int, default=8)
    parser.add_argument('--examples', type=int, default=10000)
    parser.add_argument('--minibatch', type=int, default=1000)
    parser.add_argument('--forward_batch', type=int, default=500)
    parser.add_argument('--granularity', default='stage', choices=('stage', 'layer'))
    parser.add_argument('--out', default='bench_paper_cka.json')
    args = parser.parse_args()
    model = build_model('resnet18', 10, 64)
    variables = [model.init(jax.random.PRNGKey(i), (32, 32, 3)) for i in range(args.replicas)]
    images = np.random.default_rng(0).integers(0, 256, (args.examples, 32, 32, 3), dtype=np.uint8)
    settings = CkaSettings(num_examples=args.examples, estimator='debiased', minibatch_size=args.minibatch,
                           forward_batch=args.forward_batch, granularity=args.granularity)
    settings.validate()
    maker = GramMaker(model, np.full(3, 0.5), np.full(3, 0.25), settings)
    start = time.perf_counter()
    finals = [maker.grams(v, images) for v in variables]
    jax.block_until_ready(finals)
    t_finals = time.perf_counter() - start
    scale = hsic_scale(args.minibatch, True)
    sums = np.zeros((3, args.replicas, len(maker.names)))
    start = time.perf_counter()
    for i, v in enumerate(variables):
        for gram, other in zip(maker.grams(v, images), finals[0]):  # every replica against replica 0's finals
            sums[:, i] += np.stack([np.asarray(jnp.sum(a * b, axis=(1, 2))) * scale
                                    for a, b in ((gram, other), (gram, gram), (other, other))])
    t_epoch = time.perf_counter() - start
    den = np.sqrt(np.maximum(sums[1] * sums[2], 0))
    cka = np.where(den > 0, sums[0] / np.where(den > 0, den, 1), 0.0)  # 0: degenerate (constant) features
    result = {'date': datetime.date.today().isoformat(), 'backend': jax.default_backend(),
              'device': jax.devices()[0].device_kind, 'replicas': args.replicas, 'examples': args.examples,
              'minibatch': args.minibatch, 'granularity': args.granularity, 'units': len(maker.names),
              'final_grams_seconds': round(t_finals, 1),
              'epoch_pass_seconds': round(t_epoch, 1),
              'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              'held_final_grams_mib': round(args.replicas * len(maker.names) * args.examples * args.minibatch
                                            * 4 / 2 ** 20),
              'self_cka_replica0': [round(float(x), 4) for x in cka[0]]}
    print(json.dumps(result, indent=2))
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
