"""Video Refresher: upload ad creatives, get fresh variations back.

The package's layers, each importing only those below it:
`api/`, `web/` (HTTP) → `intake`, `jobs`, `archive`, `auth` (what people
do) → `engine/`, `store/`, `lifecycle` → `rules`, `media/`. The web
application is made by `refresher.webapp.create_app`; the command-line
client (`refresher.client`) needs none of it, only `requests`.
"""

__version__ = "0.1.0"
