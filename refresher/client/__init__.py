"""The command-line client: `python -m refresher.client --help`.

A pure HTTP client for scripts and people at a terminal. It talks to the
service only through its public API, so it imports `requests` and `tqdm`
(and `requests-toolbelt` for uploads), never Flask or the server's code.
"""
