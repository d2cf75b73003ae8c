"""Training throughput on one accelerator, memjax against eager PyTorch, side by side.

Measures, on synthetic CIFAR-shaped data already on the device (warm-up and
compilation excluded):

1. memjax ResNet-18 (CIFAR variant) training, one replica, float32 and
   bfloat16: images/s, FLOPs per training image from XLA's cost analysis of
   the compiled step, and MFU against --peak_tflops.
2. memjax small CNN (P2): aggregate images/s over R replicas for each
   lifting (loop, vmap, map, shard when several devices), R doubling up to
   --max_replicas or until one measurement exceeds --budget_seconds.
3. The same ResNet-18 and CNN training step in PyTorch (channels_last,
   autocast bfloat16 on CUDA, one model at a time as the public reference code
   trains), when torch is installed: images/s and the memjax / PyTorch ratio.
4. Checkpoint cost: the blocking part of an asynchronous orbax save of 8
   ResNet-18 replicas, against the time of one training epoch of them.
5. Host stalls: seconds per step when N chunks run back to back (one
   block_until_ready at the end) against each chunk blocked on its own; equal
   times mean the host never waits on the device between chunks.

    python scripts/bench_throughput.py --out=throughput.json                 # GPU
    python scripts/bench_throughput.py --smoke --out=/tmp/throughput.json     # CPU check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_replicas import bench_training  # noqa: E402

from memjax.checkpoint import Checkpoints  # noqa: E402
from memjax.experiment import base_config  # noqa: E402
from memjax.models import build_model  # noqa: E402
from memjax.engine.fit import Chunk  # noqa: E402
from memjax.engine.runner import runner_for  # noqa: E402
from memjax.train.loop import _Init, default_steps_per_call  # noqa: E402
from memjax.train.state import OptimizerSpec  # noqa: E402
from memjax.train.trainable import ClassifierTrainable  # noqa: E402


def memjax_single(model_name: str, batch: int, dtype: str, calls: int, steps: int | None = None) -> dict:
    """One replica through the trainer's own step (the fit loop's `Chunk` of a `ClassifierTrainable`);
    FLOPs from XLA."""
    model = build_model(model_name, 10, dtype=dtype)
    steps = steps or default_steps_per_call()
    n = batch * steps
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    trainable = ClassifierTrainable(runner_for(model, mean, std),
                                    OptimizerSpec.from_train(base_config().train, steps, weight_decay=False))
    state = jax.jit(_Init(trainable, (32, 32, 3)))(jax.random.PRNGKey(0), jnp.float32(5e-4))
    rng = np.random.default_rng(0)
    own = {'labels': jax.device_put(rng.integers(0, 10, n).astype(np.int32)), 'noise_mask': jnp.zeros(n, bool)}
    common = {'pool': jax.device_put(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
              'data_key': jax.random.PRNGKey(1)}
    fn = jax.jit(Chunk(trainable, batch), static_argnames='num_steps')
    args = (jnp.arange(n, dtype=jnp.int32), None, jnp.int32(steps), jnp.int32(0), jnp.int32(1), jnp.bool_(True),
            own, common)
    compiled = fn.lower(state, *args, num_steps=1).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops_per_image = float(cost.get('flops', float('nan'))) / batch
    state, loss = fn(state, *args, num_steps=steps)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(calls):
        state, loss = fn(state, *args, num_steps=steps)
    jax.block_until_ready(loss)
    back_to_back = (time.perf_counter() - start) / (calls * steps)
    start = time.perf_counter()
    for _ in range(calls):
        state, loss = fn(state, *args, num_steps=steps)
        jax.block_until_ready(loss)
    blocked = (time.perf_counter() - start) / (calls * steps)
    return {'model': model_name, 'dtype': dtype, 'batch': batch, 'steps_per_call': steps,
            'images_per_second': batch / back_to_back, 'seconds_per_step_back_to_back': back_to_back,
            'seconds_per_step_each_blocked': blocked, 'flops_per_training_image': flops_per_image}


def torch_baseline(model_name: str, batch: int, calls: int) -> dict | None:
    try:
        import torch
        import torch.nn as tnn
    except ImportError:
        return None
    device = 'cuda' if torch.cuda.is_available() else 'cpu'

    def conv_bn(cin, cout, stride=1):
        return [tnn.Conv2d(cin, cout, 3, stride, 1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU(inplace=True)]

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = tnn.Sequential(*conv_bn(cin, cout, stride)[:3], tnn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                       tnn.BatchNorm2d(cout))
            self.short = (tnn.Sequential() if stride == 1 and cin == cout else
                          tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    if model_name == 'resnet18':
        layers, cin = conv_bn(3, 64), 64
        for i, w in enumerate((64, 128, 256, 512)):
            for j in range(2):
                layers.append(Block(cin, w, 2 if i > 0 and j == 0 else 1))
                cin = w
        net = tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(512, 10))
    else:
        net = tnn.Sequential(*conv_bn(3, 32), tnn.MaxPool2d(2), *conv_bn(32, 64), tnn.MaxPool2d(2),
                             *conv_bn(64, 128), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(2048, 256), tnn.ReLU(),
                             tnn.Linear(256, 128), tnn.ReLU(), tnn.Linear(128, 64), tnn.ReLU(), tnn.Linear(64, 10))
    net = net.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == 'cuda'):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / calls
    return {'model': model_name, 'device': device, 'batch': batch, 'autocast_bf16': device == 'cuda',
            'images_per_second': batch / seconds}


def checkpoint_cost(replicas: int, epoch_seconds: float) -> dict:
    model = build_model('resnet18', 10)
    variables = jax.jit(jax.vmap(lambda k: model.init(k, (32, 32, 3))))(jax.random.split(jax.random.PRNGKey(0),
                                                                                         replicas))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Checkpoints(tmp, async_save=True)
        checkpoints.save_epoch(0, variables)
        checkpoints.wait()
        start = time.perf_counter()
        checkpoints.save_epoch(1, variables)
        blocking = time.perf_counter() - start
        checkpoints.wait()
        total = time.perf_counter() - start
        checkpoints.close()
    return {'replicas': replicas, 'blocking_seconds': blocking, 'total_seconds': total,
            'epoch_seconds_estimate': epoch_seconds, 'blocking_fraction_of_epoch': blocking / epoch_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, to check the script on a CPU')
    parser.add_argument('--peak_tflops', type=float, default=989.0, help='bf16 dense peak (H100 SXM: 989)')
    parser.add_argument('--max_replicas', type=int, default=256)
    parser.add_argument('--budget_seconds', type=float, default=60.0)
    parser.add_argument('--out', default='throughput.json')
    args = parser.parse_args()
    batch, calls = (16, 2) if args.smoke else (512, 5)
    cnn_batch = 32 if args.smoke else 128
    result = {'date': datetime.date.today().isoformat(), 'backend': jax.default_backend(),
              'device': jax.devices()[0].device_kind, 'devices': jax.device_count(), 'jax': jax.__version__,
              'smoke': args.smoke}
    print(json.dumps(result), flush=True)
    result['resnet18'] = []
    for dtype in ('float32', 'bfloat16'):
        row = memjax_single('resnet18', batch, dtype, calls)
        row['mfu'] = row['images_per_second'] * row['flops_per_training_image'] / (args.peak_tflops * 1e12)
        result['resnet18'].append(row)
        print(json.dumps(row), flush=True)
    result['cnn_replicas'] = []
    strategies = ['loop', 'vmap', 'map'] + (['shard'] if jax.device_count() > 1 else [])
    for strategy in strategies:
        r = 1
        while r <= (4 if args.smoke else args.max_replicas):
            start = time.perf_counter()
            row = bench_training('cnn', r, strategy, cnn_batch, 'float32' if args.smoke else 'bfloat16')
            result['cnn_replicas'].append(row)
            print(json.dumps({k: row[k] for k in ('strategy', 'replicas', 'images_per_second')}), flush=True)
            if time.perf_counter() - start > args.budget_seconds:
                break
            r *= 2
    result['torch'] = [t for t in (torch_baseline('resnet18', batch, calls), torch_baseline('cnn', cnn_batch, calls))
                       if t]
    for t in result['torch']:
        ours = next((r['images_per_second'] for r in result['resnet18'] if r['dtype'] == 'bfloat16'), None) \
            if t['model'] == 'resnet18' else max(r['images_per_second'] for r in result['cnn_replicas'] if r['replicas'] == 1)
        t['memjax_over_torch'] = ours / t['images_per_second']
        print(json.dumps(t), flush=True)
    bf16 = result['resnet18'][-1]
    epoch_seconds = 8 * 50_000 / bf16['images_per_second']
    result['checkpoint'] = checkpoint_cost(2 if args.smoke else 8, epoch_seconds)
    print(json.dumps(result['checkpoint']), flush=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
