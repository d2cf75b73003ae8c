"""Noisy vs clean (P1 Fig. 3): CKA(unit of replica i at epoch t, same unit of its seed's final clean model).

Units are stages or layers (`analysis.cka.granularity`). The clean replica's
own row is its convergence curve, drawn as the r = 0 reference. Written: results/noisy_vs_clean/{cka.npz, cka.csv},
figures/noisy_vs_clean_by_stage.png and noisy_vs_clean_over_epochs.png.
Settings: `analysis.cka` (shared by the CKA analyses).
"""

from __future__ import annotations

from memjax.analysis.settings import Context
from memjax.analysis.similarity.cka_over_training import save, shared_pass
from memjax.analysis.similarity.representations import CkaSettings as Settings
from memjax.run import Run

NAME = 'noisy_vs_clean'
SETTINGS_KEY = 'cka'


def run(run: Run, settings: Settings, context: Context) -> None:
    result = shared_pass(run, settings, context)
    unit = settings.granularity
    save(run, NAME, result[NAME], result['epochs'], result['stages'], settings, context,
         f'CKA({unit} of replica at epoch t, same {unit} of the final clean model), {run.config.model.name}',
         'CKA with final clean')
