"""The WSGI entry point for plain gunicorn (``gunicorn -c conf/gunicorn.conf.py``): ``app``.

Config comes from ``$KAFKATAIL_CONFIG`` (a TOML file, optional) and ``KAFKATAIL_<KEY>``
variables, as ``conf/gunicorn.conf.py`` reads it. Import this only in a worker (gunicorn does,
unless ``preload_app``): under gevent, importing it in the master would load kafka before the
worker's monkey-patching.
"""
from __future__ import annotations

from .app import create_app
from .server import config_from_env, worker_config

app = create_app(worker_config(config_from_env()))
