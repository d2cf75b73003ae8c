"""memjax: where and how deep networks memorize, in JAX/Flax.

Train many noise-ratio replicas of an image classifier together on one
accelerator (`memjax.train`), then take them apart from their run directory
(`memjax.analysis`).
"""

__version__ = '0.1.0'
