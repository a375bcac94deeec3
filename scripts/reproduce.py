"""make reproduce, reproduce-quick, ablate: the profiles and the sweeps are
:mod:`apts.experiments.reproduce`; ``python scripts/reproduce.py --help`` lists the options."""

from apts.experiments.reproduce import main

if __name__ == "__main__":
    main()
