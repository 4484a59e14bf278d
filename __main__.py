"""`python -m samplegraph ...`: the same command line as the `samplegraph` script."""
import sys

from .runtime.cli import main

sys.exit(main())
