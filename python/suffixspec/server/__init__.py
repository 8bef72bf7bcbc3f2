"""``suffixspec serve``: an OpenAI-compatible HTTP server over :class:`suffixspec.AsyncEngine`.

Modules: ``schemas`` (request bodies and their mapping onto ``RequestParams``), ``app`` (the
FastAPI app factory ``build_app``), ``metrics`` (Prometheus), ``graceful`` (uvicorn with
suffixspec's shutdown) and ``cli`` (the subcommand). Needs the ``serve`` extra
(``pip install "suffixspec[serve]"``); importing this package alone imports none of it.
"""
