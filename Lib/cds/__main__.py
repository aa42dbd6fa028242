import sys

from cds import main

sys.exit(main())
