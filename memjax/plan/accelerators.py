"""The accelerators a plan is made for: peak rates, memory, and how `train.strategy` resolves on one chip.

Each number is the vendor's spec-sheet figure for ONE chip (dense, no
sparsity), with its source beside it. `f32` is the rate float32 programs get
at jax's default matmul precision: TF32 tensor cores on A100/H100/H200, one
bfloat16 pass on TPUs ("By default, JAX leans toward speed: float32 dot
products may be computed with reduced-precision arithmetic internally
(bfloat16 on TPU, TF32 on recent GPUs)", jax docs, "Matmul precision").
Programs that ask for Precision.HIGHEST (CKA's Grams) run slower than that.

`usable` is the share of the memory jax's allocator takes: 75% on GPUs
(XLA_PYTHON_CLIENT_MEM_FRACTION's default, jax docs "GPU memory allocation";
raise it to use more), all of a TPU's HBM.
"""

from __future__ import annotations

import dataclasses
import os

from memjax.engine.lifting import Lifting, one_device_rule

GB = 1e9
TFLOPS = 1e12


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One chip.

    Attributes:
      name: the --accelerator value.
      title: what it is, in words.
      kind: 'gpu', 'tpu' or 'cpu' (how train.strategy='auto' resolves; TPU memory layout).
      bf16, f32: peak FLOP/s for bfloat16 programs and for float32 programs at jax's default precision.
      bandwidth: memory bandwidth, bytes/s.
      memory: memory per chip, bytes.
      usable: the fraction of `memory` jax's allocator gets.
    """

    name: str
    title: str
    kind: str
    bf16: float
    f32: float
    bandwidth: float
    memory: float
    usable: float

    @property
    def limit(self) -> float:
        """Bytes a program may use."""
        return self.memory * self.usable

    def peak(self, dtype: str) -> float:
        return self.bf16 if dtype == 'bfloat16' else self.f32

    def describe(self) -> str:
        return (f'{self.title}: {self.memory / GB:.0f} GB ({self.limit / GB:.0f} GB usable), '
                f'{self.bandwidth / 1e12:.2f} TB/s, {self.bf16 / TFLOPS:.0f} TFLOP/s bf16, '
                f'{self.f32 / TFLOPS:.0f} TFLOP/s f32 at jax\'s default precision')


def _host_cpu() -> Accelerator:
    """This machine's CPU: a nominal rate (cores x 3 GHz x 32 float32 FLOP per cycle, AVX2's two FMA units;
    XLA:CPU computes bfloat16 in float32), a nominal 20 GB/s, and the physical memory (not a spec sheet)."""
    cores = os.cpu_count() or 1
    rate = cores * 3e9 * 32
    try:
        memory = float(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))
    except (ValueError, OSError, AttributeError):
        memory = 16 * GB
    return Accelerator('cpu', f'this host\'s CPU ({cores} cores, nominal rates)', 'cpu', rate, rate, 20 * GB, memory,
                       0.9)


ACCELERATORS = {
    # NVIDIA H100 Tensor Core GPU datasheet, SXM5: BF16 989 TFLOPS and TF32 494.7 TFLOPS dense (the sheet's
    # 1,979 / 989 are with sparsity), 80 GB HBM3 at 3.35 TB/s.
    'h100': Accelerator('h100', 'one NVIDIA H100 SXM', 'gpu', 989 * TFLOPS, 494.7 * TFLOPS, 3.35e12, 80 * GB, 0.75),
    # NVIDIA A100 Tensor Core GPU datasheet, SXM 80GB: BF16 312 TFLOPS, TF32 156 TFLOPS dense, 80 GB HBM2e at
    # 2,039 GB/s.
    'a100': Accelerator('a100', 'one NVIDIA A100 SXM 80GB', 'gpu', 312 * TFLOPS, 156 * TFLOPS, 2.039e12, 80 * GB,
                        0.75),
    # NVIDIA H200 Tensor Core GPU datasheet, SXM: BF16 989 TFLOPS, TF32 494.7 TFLOPS dense, 141 GB HBM3e at
    # 4.8 TB/s.
    'h200': Accelerator('h200', 'one NVIDIA H200 SXM', 'gpu', 989 * TFLOPS, 494.7 * TFLOPS, 4.8e12, 141 * GB, 0.75),
    # Google Cloud TPU v5e documentation, key chip specifications: 197 TFLOPs bf16 per chip, HBM2 16 GB at
    # 819 GBps (float32 at the default precision: one bf16 pass).
    'v5e': Accelerator('v5e', 'one Google TPU v5e chip', 'tpu', 197 * TFLOPS, 197 * TFLOPS, 819 * GB, 16 * GB, 1.0),
    # Google Cloud TPU v6e (Trillium) documentation: 918 TFLOPs bf16 per chip, HBM 32 GB at 1,640 GBps.
    'v6e': Accelerator('v6e', 'one Google TPU v6e chip', 'tpu', 918 * TFLOPS, 918 * TFLOPS, 1640 * GB, 32 * GB, 1.0),
    # NVIDIA T4 datasheet: FP32 8.1 TFLOPS, mixed-precision FP16 65 TFLOPS (no bfloat16 tensor cores: XLA runs
    # bfloat16 at about the FP32 rate), 16 GB GDDR6 at 320+ GB/s.
    't4': Accelerator('t4', 'one NVIDIA T4', 'gpu', 8.1 * TFLOPS, 8.1 * TFLOPS, 320 * GB, 16 * GB, 0.75),
}
NAMES = tuple(ACCELERATORS) + ('cpu',)


def accelerator(name: str) -> Accelerator:
    """The named accelerator (`NAMES`); ValueError naming the known ones."""
    if name == 'cpu':
        return _host_cpu()
    if name not in ACCELERATORS:
        raise ValueError(f"--accelerator={name!r} is not one of {', '.join(NAMES)}")
    return ACCELERATORS[name]


def planned_lifting(requested: str, replicas: int, chip: Accelerator) -> tuple[Lifting, str]:
    """(the lifting `requested` gives on ONE `chip`, why): `memjax.engine.lifting.one_device_rule`, the rule
    `choose` applies on one device. 'shard' on one chip is one device's vmap (its programs are vmap's)."""
    if requested == 'auto':
        kind, reason = one_device_rule(chip.kind, replicas)
        return Lifting(kind), reason
    if requested == 'shard':
        return Lifting('vmap'), 'requested; shard over one chip runs vmap on it'
    return Lifting(requested), 'requested'
