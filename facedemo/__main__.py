"""`python -m facedemo ...`: see facedemo.cli."""
import sys

from facedemo.cli import main

sys.exit(main())
