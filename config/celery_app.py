"""The Celery application, configured from Django settings (CELERY_* names); production settings unless told otherwise.

`import config` imports this module first (config/__init__.py), so its default is also the default of `config.wsgi`:
both are deployments (the reasons are in config/settings/prod.py). `manage.py` sets its own default (dev) before.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")  # a worker is a deployment: config/settings/prod.py

app = Celery("gridtwin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def schedule_loadflow_snapshots(sender, **kwargs):
    """Celery beat: a snapshot load flow of every grid every GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES (0 turns it off)."""
    from django.conf import settings

    minutes = settings.GRIDTWIN_LOADFLOW_SNAPSHOT_MINUTES
    if minutes > 0:
        sender.add_periodic_task(60.0 * minutes, sender.signature("twin.loadflow_snapshot_all_grids"), name="loadflow-snapshot-every-grid")
