import sys

from onevision.cli.main import main

sys.exit(main())
