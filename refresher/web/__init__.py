"""The web form: pages for people, on top of the JSON API.

The pages are Jinja templates; a little plain JavaScript (static/js/) calls
/api/* with the browser's cookie session and renders what comes back. Every
script, style and icon is served from static/, so the Content-Security-Policy
can forbid everything else.
"""

from flask import Blueprint

# Served under /assets: the app's own /static route (Flask makes one) would shadow ours.
bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")

from . import headers, pages, signin  # noqa: E402,F401  (they attach their routes to bp)
