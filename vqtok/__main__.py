"""`python -m vqtok ...` (used by torchrun) runs the CLI."""

from vqtok.cli import main

if __name__ == "__main__":
    main()
