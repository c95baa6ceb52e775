"""gunicorn settings for kafkatail, for deployments that run gunicorn themselves:

    KAFKATAIL_CONFIG=/etc/kafkatail/kafkatail.toml gunicorn -c conf/gunicorn.conf.py

This is what ``kafkatail serve`` runs, from the same code (``kafkatail.server``): worker class
(kafkatail's subclasses of gunicorn's gthread and gevent workers, whose SIGTERM closes every
tail with 1001 before the worker exits, and which give a request's headers ``header_timeout_s``
and read them without holding a pool thread: ``kafkatail/workers/``), threads and connections,
timeouts sized against ``shutdown_grace_s``, and gunicorn's logs through kafkatail's log
queue. Every value comes from kafkatail's config (``$KAFKATAIL_CONFIG``, then
``KAFKATAIL_<KEY>``), so set ``worker_class``, ``threads`` and ``workers`` there, not with
gunicorn flags: under gthread kafkatail sizes its tail cap from ``threads``. ``-b`` on the
command line overrides ``bind``.

The app is ``kafkatail.wsgi:app``, loaded in each worker, never in this master process: under
gevent the worker monkey-patches first, and only then may kafka-python be imported.
"""
import sys

from kafkatail import server as _server
from kafkatail.config import ConfigError

try:
    _kafkatail = _server.config_from_env()
    _server.prepare_master(_kafkatail)
except ConfigError as _exc:
    sys.exit(f"kafkatail: config error: {_exc}")

globals().update(_server.gunicorn_settings(_kafkatail))
wsgi_app = "kafkatail.wsgi:app"
