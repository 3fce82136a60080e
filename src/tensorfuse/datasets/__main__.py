"""``python -m tensorfuse.datasets NAME``: the path of a bundled data set; without NAME, the names."""

import sys

from tensorfuse.datasets import names, path

if len(sys.argv) < 2:
    print("\n".join(names()))
else:
    try:
        print(path(sys.argv[1]))
    except ValueError as error:
        sys.exit(f"python -m tensorfuse.datasets: error: {error}")
