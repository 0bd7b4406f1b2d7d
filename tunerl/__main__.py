import sys

from tunerl.cli import main

sys.exit(main())
