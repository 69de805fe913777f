"""`python -m facedemo ...`: see facedemo.app.cli."""
import sys

from facedemo.app.cli import main

sys.exit(main())
