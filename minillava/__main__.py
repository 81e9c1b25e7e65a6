"""`python -m minillava ...` is `minillava ...`; so `torchrun --nproc-per-node N -m minillava pipeline ...` works."""

from minillava.cli import main

if __name__ == "__main__":
    main()
