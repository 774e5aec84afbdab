"""`python -m runners.report SWEEP_DIR`: rebuild a results folder's tables and report from its records."""
import sys

from runners.report.cli import main

sys.exit(main())
