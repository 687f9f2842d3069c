"""Settings of the example project: the seed's "compile an application" service.

SQLite by default (the demo needs nothing installed); set DT_DB=postgres to use
the PostgreSQL database ``DT_PG_NAME`` (default ``test``) on 127.0.0.1.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("DT_STATE_DIR", BASE_DIR / ".demo"))
STATE_DIR.mkdir(exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-key-for-the-example-project-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "distributed_tasks",
    "testproject.builds",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if os.environ.get("DT_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("DT_PG_NAME", "test"),
            "HOST": os.environ.get("DT_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DT_PG_PORT", "5432"),
            "USER": os.environ.get("DT_PG_USER", "postgres"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DT_SQLITE_PATH", str(STATE_DIR / "db.sqlite3")),
            # Several worker processes write at once: WAL, immediate transactions and
            # a generous busy timeout keep SQLite from answering "database is locked".
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

REDIS_URL = os.environ.get("DT_REDIS_URL", "redis://127.0.0.1:6379/0")

DISTRIBUTED_TASKS = {
    "REDIS_URL": REDIS_URL,
    # Keys of their own: `make demo` starts by deleting every key under this prefix, which
    # must never be a real project's data in the same Redis (whose prefix defaults to "dt").
    "KEY_PREFIX": "dt-demo",
    # A global periodic task: once every 2 s on one node of the cluster (the demo shows it).
    "PERIODIC": {
        "builds.report": {
            "task": "testproject.builds.tasks.BuildReport",
            "interval": 2,
            "timeout": 10,
            "args": {"source": "demo"},
        },
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DT_LOG_LEVEL", "WARNING")},
}
