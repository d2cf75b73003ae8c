"""Layer convergence (P1 Fig. 1): CKA(unit at epoch t, the same unit at the final epoch), per replica.

Units are stages or, with `analysis.cka.granularity='layer'`, layers (P1's
Fig. 1 is per layer). Written: results/convergence/{cka.npz, cka.csv},
figures/convergence_by_stage.png (CKA against unit; residual groups dashed)
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
    unit = settings.granularity
    save(run, NAME, result[NAME], result['epochs'], result['stages'], settings, context,
         f'Layer convergence: CKA({unit} at epoch t, same {unit} at the final epoch), {run.config.model.name}',
         'CKA with final')
