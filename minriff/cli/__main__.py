"""`python -m minriff.cli ...` = `minriff ...`."""
import sys

from minriff.cli import main

sys.exit(main())
