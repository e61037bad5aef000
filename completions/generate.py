"""Regenerate the shell completion scripts in this folder from the medtool CLI.

Run after changing any command or option:  python completions/generate.py
(tests/test_completion.py fails while the checked-in scripts differ from what this writes).
"""

from pathlib import Path

from medtool.completion import write

if __name__ == "__main__":
    for path in write(Path(__file__).resolve().parent):
        print(path)
