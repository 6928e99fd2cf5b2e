"""Production defaults: a deployment's processes run production settings and refuse to start without their services.

Each check starts a fresh Python process (settings are read once per process), with an environment built from
scratch: nothing of the test process's own settings reaches it.
"""

import os
import subprocess
import sys

from django.conf import settings

PROD_ENV = {
    "SECRET_KEY": "prod-test-" + "k" * 50,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",  # settings only: nothing here connects
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    "ALLOWED_HOSTS": "hub.example",
}


def run(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    command = [sys.executable, *args] if args else [sys.executable, "-c", code]
    return subprocess.run(command, env={**keep, **env}, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120)  # noqa: S603


def test_wsgi_and_celery_default_to_production_settings_and_manage_py_to_the_demo():
    probe = "import os, {module}; print(os.environ['DJANGO_SETTINGS_MODULE'])"
    for module in ("config.wsgi", "config.celery_app"):
        done = run(probe.format(module=module), PROD_ENV)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "config.settings.prod", module
    demo = run("", {}, "manage.py", "diffsettings", "--output", "unified")
    assert demo.returncode == 0, demo.stderr
    assert "+ DEBUG = True" in demo.stdout and "sqlite3" in demo.stdout


def test_production_refuses_to_start_without_database_broker_or_secret():
    for missing in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"):
        env = {k: v for k, v in PROD_ENV.items() if k != missing}
        done = run("import config.wsgi", env)  # a worker reads the same module (the default above)
        assert done.returncode != 0, missing
        assert "ImproperlyConfigured" in done.stderr and f"need {missing}" in done.stderr, done.stderr[-2000:]


def test_production_trusts_the_tls_proxy_and_check_deploy_has_no_security_warning():
    code = """
import django
django.setup()
from django.test import RequestFactory
request = RequestFactory().get("/api/v1/", HTTP_HOST="hub.example", HTTP_X_FORWARDED_PROTO="https")
print(request.build_absolute_uri())
"""
    done = run(code, {**PROD_ENV, "DJANGO_SETTINGS_MODULE": "config.settings.prod"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "https://hub.example/api/v1/"
    check = run("", {**PROD_ENV, "DJANGO_SETTINGS_MODULE": "config.settings.prod"}, "manage.py", "check", "--deploy", "--tag", "security")
    assert check.returncode == 0, check.stderr
    assert "security.W" not in check.stdout + check.stderr, check.stdout + check.stderr


def test_check_deploy_with_production_settings_is_clean_in_every_app():
    """Every deploy check, not only Django's own security ones: django-oauth-toolkit's RFC 9700 checks included."""
    done = run("", {**PROD_ENV, "DJANGO_SETTINGS_MODULE": "config.settings.prod"}, "manage.py", "check", "--deploy", "--fail-level",
               "WARNING")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "System check identified no issues" in output and "WARNINGS" not in output, output


def test_an_unreachable_vulnerability_database_is_not_a_pass(tmp_path):
    """`make audit`'s pip-audit step with its database out of reach (a proxy nobody listens on; an empty cache): it says
    NOT checked and fails, unless GRIDTWIN_AUDIT_OFFLINE_OK=1 — and then it still says NOT checked."""
    offline = {"HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    refused = run("", offline, "tests/audit.py", "pip-audit")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "vulnerability database unreachable — NOT checked" in refused.stdout
    excused = run("", {**offline, "GRIDTWIN_AUDIT_OFFLINE_OK": "1"}, "tests/audit.py", "pip-audit")
    assert excused.returncode == 0, excused.stdout + excused.stderr
    assert "NOT checked" in excused.stdout
