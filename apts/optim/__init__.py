"""Numerical core: L-SR1 memory, exact trust-region subproblem (OBS), TR iteration/optimizer.

Imports only torch and the standard library.
"""

from .apts import APTS
from .comm import Communicator, SingleProcess
from .diloco import DiLoCo
from .flat import check_flat_params, flat_grad, flat_params, num_params, set_flat_params_
from .local_sgd import LocalAdam, LocalSGD
from .lsr1 import LSR1, LSR1Spectrum
from .subproblem import SubproblemResult, solve_subproblem, solve_subproblem_detailed
from .trust_region import TRDecision, TRResult, TRRules, TrustRegion, tr_iteration

__all__ = [
    "APTS",
    "Communicator",
    "DiLoCo",
    "LSR1",
    "LSR1Spectrum",
    "LocalAdam",
    "LocalSGD",
    "SingleProcess",
    "SubproblemResult",
    "TRDecision",
    "TRResult",
    "TRRules",
    "TrustRegion",
    "check_flat_params",
    "flat_grad",
    "flat_params",
    "num_params",
    "set_flat_params_",
    "solve_subproblem",
    "solve_subproblem_detailed",
    "tr_iteration",
]
