"""Writes the Colab notebooks in colab/ (run after editing this file; the notebooks are its output).

Every notebook has the same cells: parameters (papermill-tagged), install,
Drive, device, config and data, train and analyse, summary, figures, tables.
Only the texts, the default config and the figures shown differ. The cells
hold no logic: memjax calls (memjax.notebook) and display.

    python scripts/make_notebooks.py
"""

from __future__ import annotations

import os

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = 'https://github.com/YOUR-ORG/memjax'  # placeholder: the repository's URL is set in each notebook

NOTEBOOKS = {
    'quickstart': dict(
        title='memjax quickstart: train, summarise, look',
        intro=('Trains the default config (the small CNN on Fashion-MNIST with label-noise ratios 0, 0.2 and '
               '0.5; P1/P2 analyses: CKA over training, stitching, one-stage fine-tuning) on this runtime\'s '
               'accelerator, then shows the summary table and two figures. The last section explores any run '
               'directory (set `WORKDIR` to one already trained).'),
        config='configs/default.py', source='raw', data_dir='/content/data/fashion_mnist',
        data_note=('Fashion-MNIST\'s four files (30 MB) are downloaded into `DATA_DIR`: seconds on Colab. '
                   'Expected time: a few minutes on a TPU or GPU runtime, about 10 minutes on a CPU runtime '
                   '(the CPU figure is measured on a 2-core machine; accelerator times are not measured).'),
        figures=('convergence_by_stage', 'stitching_clean_to_noisy'), explore=True),
    'p1_p2_similarity_stitching': dict(
        title='P1 / P2: where do noisy-label networks memorize? CKA similarity and model stitching',
        intro=('ResNet-18 on CIFAR-10 with random-label noise r in {0, 5, 10, 15, 20, 25, 37.5, 50, 67.5}%, '
               'each replica trained to 99% training accuracy (`configs/cifar10_r18.py`), then P1\'s CKA '
               'analyses (layer convergence over training, noisy vs clean replicas, CKA heatmaps) and P2\'s '
               'stitching in both directions with critical depths and one-stage fine-tuning.'),
        config='configs/cifar10_r18.py', source='raw', data_dir='/content/data/cifar10',
        data_note=('CIFAR-10\'s python tarball (163 MB) is downloaded into `DATA_DIR` (typically under a minute '
                   'on Colab; not measured). Or set `DATA_SOURCE = \'tfds\'` and `DATA_DIR` to a prepared '
                   'tensorflow_datasets folder (array_record). Expected training time: about an hour on one '
                   'H100 (an estimate from the FLOP count, not a measurement); TPU v5e/v6e times are not '
                   'measured. With Drive mounted, rerunning the training cell after a runtime reset resumes.'),
        figures=()),
    'p3_localization': dict(
        title='P3: can memorization be localized? ResNet-9 on CIFAR-10',
        intro=('ResNet-9 on CIFAR-10 with 10% of the labels changed to a wrong class, 3 seeds, 50 epochs '
               '(`configs/cifar10_r9.py`), then P3\'s analyses: gradient accounting per layer, layer '
               'rewinding, layer retraining, critical neurons and example-tied dropout.'),
        config='configs/cifar10_r9.py', source='raw', data_dir='/content/data/cifar10',
        data_note=('CIFAR-10\'s python tarball (163 MB) is downloaded into `DATA_DIR` (typically under a minute '
                   'on Colab; not measured), or use a prepared tfds folder with `DATA_SOURCE = \'tfds\'`. '
                   'Expected training time: about 10 minutes on one H100 (an estimate, not a measurement); '
                   'the analyses and TPU times are not measured.'),
        figures=()),
    'p4_dissection': dict(
        title='P4: dissecting memorization with input gradients and function dissimilarity (VGG-11, CIFAR-10)',
        intro=('VGG-11 on CIFAR-10 with true and random labels, three seeds each, 100 epochs at a constant '
               'learning rate (`configs/cifar10_vgg11_p4.py`); the input-gradient magnitude G per epoch, and '
               'the dissimilarity of the replicas\' functions through a DCGAN and activation maximisation. '
               'For Fig. 5\'s noise levels set `VARIANT = \'noise_levels\'`.'),
        config='configs/cifar10_vgg11_p4.py', source='raw', data_dir='/content/data/cifar10',
        data_note=('CIFAR-10\'s python tarball (163 MB) is downloaded into `DATA_DIR` (typically under a minute '
                   'on Colab; not measured), or use a prepared tfds folder with `DATA_SOURCE = \'tfds\'`. '
                   'Expected time: not measured on any accelerator.'),
        figures=()),
    'p5_geometry': dict(
        title='P5: the geometry of memorization, class manifolds per layer (ResNet-18, CIFAR-10)',
        intro=('ResNet-18 on CIFAR-10, a clean replica and one with half its labels permuted '
               '(`configs/cifar10_r18_p5.py`); MFTMA capacity, radius, dimension and center correlation of '
               'the class manifolds per residual block over training, and rewinding of the last k stages.'),
        config='configs/cifar10_r18_p5.py', source='raw', data_dir='/content/data/cifar10',
        data_note=('CIFAR-10\'s python tarball (163 MB) is downloaded into `DATA_DIR` (typically under a minute '
                   'on Colab; not measured), or use a prepared tfds folder with `DATA_SOURCE = \'tfds\'`. '
                   'Expected time: not measured on any accelerator.'),
        figures=()),
}


def cells(name: str, spec: dict) -> list:
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    link = f'https://colab.research.google.com/github/YOUR-ORG/memjax/blob/main/colab/{name}.ipynb'
    out = [
        md(f'# {spec["title"]}\n\n{spec["intro"]}\n\n'
           f'[Open in Colab]({link}) (replace YOUR-ORG with the repository\'s owner). '
           '*Runtime > Change runtime type* picks the accelerator (TPU v5e-1 / v6e-1, a GPU, or CPU); then '
           '*Runtime > Run all*. Every step is a `memjax` call: the notebook holds no logic.\n\n'
           '`VARIANT = \'smoke\'` (with `DATA_SOURCE = \'synthetic\'`) runs the same cells on a tiny synthetic '
           'run in seconds; that is how CI executes this notebook.'),
        code(f"REPO = '{REPO}'  # <- REPLACE with the memjax repository's git URL\n"
             "BRANCH = 'main'\n"
             "INSTALL = True  # False: use the memjax already importable (a local checkout, CI)\n"
             f"CONFIG = '{spec['config']}'\n"
             "VARIANT = ''  # '' = the paper's setting; 'smoke' = tiny synthetic run (seconds on a CPU)\n"
             "OVERRIDES = {}  # dotted config keys, e.g. {'train.epochs': 50}\n"
             f"DATA_SOURCE = '{spec['source']}'  # 'raw': download the original files; 'tfds': prepared "
             "data_dir; 'synthetic'\n"
             f"DATA_DIR = '{spec['data_dir']}'\n"
             "MOUNT_DRIVE = True  # keep the run directory on Google Drive, so a runtime reset resumes\n"
             "WORKDIR = None  # None: <Drive>/memjax_runs/<config> when mounted, else runs/<config>",
             metadata={'tags': ['parameters']}),
        md('## Install\n\nClones the repository into /content/memjax_src (for `configs/`; kept if already '
           'there) and pip-installs memjax from it. memjax\'s dependencies are ranges, so Colab\'s own jax '
           '(with its TPU or GPU support) is kept. Skipped with `INSTALL = False`.'),
        code("if INSTALL:\n"
             "    ![ -d /content/memjax_src ] || git clone -q --depth 1 -b {BRANCH} {REPO} /content/memjax_src\n"
             "    %pip install -q /content/memjax_src\n"
             "    %cd /content/memjax_src"),
        code("from IPython.display import Image, display\n\n"
             "from memjax import notebook\n\n"
             "if MOUNT_DRIVE:\n"
             "    print(notebook.mount_drive())\n"
             "print(notebook.device_summary())"),
        md(f'## Config and data\n\n{spec["data_note"]}'),
        code("config = notebook.load_config(CONFIG, VARIANT, OVERRIDES)\n"
             "print(notebook.prepare_data(config, DATA_SOURCE, DATA_DIR))\n"
             "workdir = notebook.workdir_for(CONFIG, VARIANT, WORKDIR)\n"
             "print('run directory:', workdir)"),
        md('## Train and analyse\n\nTrains every replica (sharded over the devices when the runtime has '
           'several), writes the summary, then runs the config\'s analyses. Interrupted? Run this cell again: '
           'training resumes from the last checkpoint and finished analyses are skipped.'),
        code("workdir = notebook.run_experiment(config, workdir)"),
        md('## Summary'),
        code("print(notebook.summary_table(workdir))"),
        md('## Figures'),
        code(f"for path in notebook.run_figures(workdir, names={spec['figures']!r}):\n"
             "    print(path)\n"
             "    display(Image(path))"),
    ]
    if spec.get('explore'):
        out += [
            md('## Explore a run\n\nEvery table and figure of a run directory, e.g. one trained earlier on '
               'Drive: set `workdir` to it and run the cells below.'),
            code("print(notebook.metrics_text(workdir))"),
            code("for path in notebook.run_figures(workdir):\n    print(path)"),
        ]
    else:
        out += [md('## Tables')]
    out += [code("for name, path in notebook.result_tables(workdir).items():\n"
                 "    print(f'== {name}')\n"
                 "    print(notebook.csv_text(path, max_rows=12))")]
    return out


def main() -> None:
    for name, spec in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = cells(name, spec)
        nb.metadata = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                       'language_info': {'name': 'python'}, 'accelerator': 'TPU',
                       'colab': {'provenance': []}}
        for k, cell in enumerate(nb.cells):
            cell['id'] = f'{name[:20]}-{k}'
        nbformat.validate(nb)
        nbformat.write(nb, os.path.join(ROOT, 'colab', f'{name}.ipynb'))


if __name__ == '__main__':
    main()
