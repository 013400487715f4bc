"""gunicorn's settings and hooks for a checkout: `gunicorn -c config/gunicorn.conf.py app:app`.

They live in refresher/gunicorn_config.py, so that an installed wheel has
them too (`gunicorn -c python:refresher.gunicorn_config refresher.wsgi:app`),
and so that a reload (`kill -HUP`), which reads this file again, finds the
hooks' state where it was.
"""

from refresher.gunicorn_config import *  # noqa: F401,F403
