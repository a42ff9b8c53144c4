from __future__ import annotations

from collabgen.cli import main

main()
