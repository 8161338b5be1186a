"""`python -m fttrace ...`: the `fttrace` command."""
import sys

from fttrace.cli import main

sys.exit(main())
