"""`python -m minriff ...` = `minriff ...`."""
import sys

from minriff.cli import main

sys.exit(main())
