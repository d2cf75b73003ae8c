"""Shared test set-up: CPU only, tiny synthetic runs."""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(__file__))
