import sys

from .app import main

if __name__ == "__main__":  # guarded: the engine's child process (spawn) imports this module
    sys.exit(main())
