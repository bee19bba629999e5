import sys

from symgrad.cli import main

if __name__ == "__main__":  # worker processes spawned by a local Dask cluster import this too
    sys.exit(main())
