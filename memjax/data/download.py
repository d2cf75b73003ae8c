"""Fetches a data set's original files into a folder (for notebooks; memjax's readers never download).

`download_raw(name, data_dir)` puts the files that `memjax.data.raw_files`
reads into `data_dir`, skipping the ones already there (a rerun, or a Drive
folder kept across Colab sessions, costs nothing), and returns what it did
and how long it took.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request

from memjax.errors import ConfigError

_MNIST = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz',
          't10k-labels-idx1-ubyte.gz')
URLS = {
    'cifar10': ('https://www.cs.toronto.edu/~kriz/', ('cifar-10-python.tar.gz',)),
    'cifar100': ('https://www.cs.toronto.edu/~kriz/', ('cifar-100-python.tar.gz',)),
    'mnist': ('https://storage.googleapis.com/cvdf-datasets/mnist/', _MNIST),
    'fashion_mnist': ('http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/', _MNIST),
}


def download_raw(name: str, data_dir: str, base_url: str | None = None) -> str:
    """Downloads `name`'s original files into `data_dir` unless present; returns a one-line report.

    Args:
      name: cifar10, cifar100, mnist or fashion_mnist.
      data_dir: folder for the files (created).
      base_url: where the files are (default: their original home; tests pass a file:// URL).

    Raises:
      ConfigError: a data set with no download here.
      OSError: the download failed (a partial file is removed).
    """
    if name not in URLS:
        raise ConfigError(f"no download for data set {name!r}; memjax fetches {', '.join(URLS)} "
                          "(use data.source='tfds' with a prepared data_dir for the others)")
    default_url, files = URLS[name]
    base_url = base_url or default_url
    os.makedirs(data_dir, exist_ok=True)
    start, fetched, size = time.time(), [], 0
    for file in files:
        path = os.path.join(data_dir, file)
        if not os.path.exists(path):
            partial = path + '.partial'
            try:
                with urllib.request.urlopen(base_url.rstrip('/') + '/' + file, timeout=60) as response, \
                        open(partial, 'wb') as out:
                    shutil.copyfileobj(response, out, length=1 << 20)
            except BaseException:
                if os.path.exists(partial):
                    os.remove(partial)
                raise
            os.replace(partial, path)
            fetched.append(file)
        size += os.path.getsize(path)
    seconds = time.time() - start
    if not fetched:
        return f'{name}: files already in {data_dir} ({size / 1e6:.0f} MB); nothing downloaded'
    return f'{name}: downloaded {", ".join(fetched)} ({size / 1e6:.0f} MB) into {data_dir} in {seconds:.0f} s'
