"""Layer convergence (P1 Fig. 1): CKA(stage at epoch t, the same stage at the final epoch), per replica.

Written: results/convergence/{cka.npz, cka.csv}, figures/convergence_by_stage.png
and convergence_over_epochs.png. Settings: `analysis.cka` (shared by the CKA analyses).
"""

from __future__ import annotations

from memjax.analysis.settings import Context
from memjax.analysis.similarity.cka_over_training import save, shared_pass
from memjax.analysis.similarity.representations import CkaSettings as Settings
from memjax.run import Run

NAME = 'convergence'
SETTINGS_KEY = 'cka'


def run(run: Run, settings: Settings, context: Context) -> None:
    result = shared_pass(run, settings, context)
    save(run, NAME, result[NAME], result['epochs'], result['stages'], context,
         f'Layer convergence: CKA(stage at epoch t, same stage at the final epoch), {run.config.model.name}',
         'CKA with final')
