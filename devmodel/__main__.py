import sys

from devmodel.cli import main

sys.exit(main())
