import sys

from tensorfuse._cli import main

sys.exit(main())
