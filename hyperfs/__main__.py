import sys

from hyperfs.cli import main

sys.exit(main())
