"""``python -m medtool`` runs the command line."""

from medtool.cli import main

if __name__ == "__main__":
    main()
