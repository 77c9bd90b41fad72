"""`python -m triergon.train` (under torchrun): see `run.py`."""

from .run import main

main()
