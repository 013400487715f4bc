"""`python -m refresher.engine --control PATH --parent PID`, with the settings
as JSON on stdin: the supervisor process, as `handle.SupervisorHandle` starts it.

It runs as a package's `__main__` on purpose: an encode worker is started
with multiprocessing's "spawn", which imports the parent's main module again
in every child unless that module is a `__main__`. Run as
`refresher.engine.supervisor`, each encode worker would load the
supervisor's database, scheduler and storage libraries it never uses: about
1 s of CPU before it can take its first variation, and their memory for as
long as it lives.
"""

from .lifeline import exit_at_once
from .supervisor import main

main()
exit_at_once()
