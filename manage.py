#!/usr/bin/env python
"""Django's command-line utility for gridtwin."""

import os
import sys


def main() -> None:
    # The demo's embedded settings (DEBUG on, SQLite, Celery in process) when nothing is set, so `make demo` needs no
    # environment; a deployment's administration sets DJANGO_SETTINGS_MODULE=config.settings.prod (see that module).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
