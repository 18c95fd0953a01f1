"""`python -m seg_xai_fast.cli ...`: the same as `seg-xai ...`."""
import sys

from . import main

sys.exit(main())
