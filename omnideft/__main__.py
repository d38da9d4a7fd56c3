import sys

from omnideft.cli import main

sys.exit(main())
