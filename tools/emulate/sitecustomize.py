"""Started by Python in every process whose PYTHONPATH holds this folder: see arithmetic.py."""

import os

if os.environ.get("MINILLAVA_EMULATE"):
    import arithmetic

    arithmetic.enable(os.environ["MINILLAVA_EMULATE"])
