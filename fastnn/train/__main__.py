import sys

from .cli import main

# guarded: --search starts worker processes, which import the main module again
if __name__ == "__main__":
    sys.exit(main())
