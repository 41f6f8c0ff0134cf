import sys

from vtok.cli import main

sys.exit(main())
