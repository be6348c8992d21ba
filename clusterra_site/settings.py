"""Settings: everything from the environment, with embedded defaults that run on one machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

from accounts import oidc
from clusterra_site import env

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("CLUSTERRA_DATA_DIR", BASE_DIR / "data")).resolve()
# Here, at settings import, so that every entry point refuses an open folder before writing to it:
# manage.py's commands (migrate, the sync loop) and the web server, which runs no system checks.
env.private_folder(DATA_DIR)

DEBUG = env.flag("CLUSTERRA_DEBUG", False)
SECRET_KEY = env.secret_key(DATA_DIR)
ALLOWED_HOSTS = env.words("CLUSTERRA_ALLOWED_HOSTS", "127.0.0.1 localhost")
CSRF_TRUSTED_ORIGINS = env.words("CLUSTERRA_TRUSTED_ORIGINS", "")
# Behind TLS in production: the console refuses plain-HTTP cookies there.
SECURE = env.flag("CLUSTERRA_SECURE", False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "ui",
    "audit",
    "clusters",
    "accounts",
    "access",
    "jobs",
    "files",
    "job_templates",
    "terminal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before WhiteNoise, so static files and every error page carry the policy too.
    "clusterra_site.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's AuthenticationMiddleware, the person's row found by a prepared query (accounts/signed_in.py).
    "accounts.signed_in.SignedInMiddleware",
    # Django's MessageMiddleware, but the storage is only made for a request that uses it.
    "clusterra_site.middleware.MessagesWhenUsed",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "clusterra_site.urls"
ASGI_APPLICATION = "clusterra_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": env.database(os.environ.get("DATABASE_URL"), DATA_DIR)}
# Threads of a web worker that run requests' Django code (clusterra_site.asgi); 0: as many as the database
# pool lends connections (CLUSTERRA_DB_POOL_SIZE), or 10 without a pool.
CLUSTERRA_WEB_THREADS = env.integer("CLUSTERRA_WEB_THREADS", 0, minimum=0)
# How many of those threads run a request at once (clusters.turns; bench row 8: fewer cost less CPU per
# request and a shorter tail than all ten); 0: all of them.
CLUSTERRA_WEB_RUNNING = env.integer("CLUSTERRA_WEB_RUNNING", 3, minimum=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    env.private_sqlite_file(DATABASES["default"]["NAME"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_LAYERS = {"default": env.channel_layer(REDIS_URL)}
# Redis with REDIS_URL, so the sign-in throttle counts across workers; one process's memory without it.
CACHES = {"default": env.cache(REDIS_URL)}
# Sessions: with Redis, read from it (one GET instead of a database query on every page) and kept in the
# database (clusterra_site/sessions.py). Without it the cache is one process's memory, which another
# worker's sign-out could not reach: the database alone then.
SESSION_ENGINE = "clusterra_site.sessions" if REDIS_URL else "django.contrib.sessions.backends.db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in: allauth, with the company IdPs from CLUSTERRA_OIDC_* (see accounts/oidc.py) or the admin.
INSTALLED_APPS += [
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
]
MIDDLEWARE += [
    "allauth.account.middleware.AccountMiddleware",
    # After authentication: it needs to see whether the admin's login view signed the person in.
    "clusterra_site.security.AdminLoginThrottleMiddleware",
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
SOCIALACCOUNT_PROVIDERS = oidc.socialaccount_providers()
# Password sign-in on /accounts/login/ only where asked for (administrators, the demo);
# staff can always use /admin/login/. Read once at start: allauth builds its URLs from it.
SOCIALACCOUNT_ONLY = not env.flag("CLUSTERRA_LOCAL_LOGIN", False)
ACCOUNT_LOGIN_METHODS = {"username"}
# The IdP vouches for addresses (and SOCIALACCOUNT_ONLY requires this).
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_SESSION_REMEMBER = True
# Failed password sign-ins: 10 a minute from one address, 5 in 5 minutes for one user name, on
# /accounts/login/ and (clusterra_site.security) /admin/login/ alike. The counters live in Django's
# cache (CACHES above): in Redis, shared by every worker, when REDIS_URL is set.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/300s/key"}
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if SECURE else "http"
# Never link a sign-in to an existing account by e-mail address, and keep no IdP token at rest.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_STORE_TOKENS = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("CLUSTERRA_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
# Behind nginx, a folder of its own that nginx may read (deploy/README.md): the data folder is private.
STATIC_ROOT = Path(os.environ.get("CLUSTERRA_STATIC_DIR") or DATA_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # Browser code from npm (package.json), served as it was installed.
    ("xterm", BASE_DIR / "node_modules" / "@xterm" / "xterm" / "lib"),
    ("xterm", BASE_DIR / "node_modules" / "@xterm" / "xterm" / "css"),
    ("xterm-addon-fit", BASE_DIR / "node_modules" / "@xterm" / "addon-fit" / "lib"),
    ("asciinema-player", BASE_DIR / "node_modules" / "asciinema-player" / "dist" / "bundle"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.integer("CLUSTERRA_SESSION_HOURS", 12) * 3600
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# POSIX accounts: where the name comes from, and the UID/GID range numbers are allocated from, once.
CLUSTERRA_POSIX_NAME_CLAIM = os.environ.get("CLUSTERRA_POSIX_NAME_CLAIM", "email")
CLUSTERRA_UID_MIN = env.integer("CLUSTERRA_UID_MIN", 200000)
CLUSTERRA_UID_MAX = env.integer("CLUSTERRA_UID_MAX", 299999)
CLUSTERRA_RESERVED_POSIX_NAMES = env.words("CLUSTERRA_RESERVED_POSIX_NAMES", "")
CLUSTERRA_API_TOKEN_DAYS = env.integer("CLUSTERRA_API_TOKEN_DAYS", 90)
# At most this many /v1 requests per API token, "<count>/<period>" (s, min, h, day; e.g. 5000/h); past it
# the answer is 429 with Retry-After. Counted in the cache: Redis, shared by every worker, with REDIS_URL.
CLUSTERRA_API_RATE = os.environ.get("CLUSTERRA_API_RATE", "120/min").strip()
if not re.fullmatch(r"[1-9]\d*/([1-9]\d*)?(s|sec|m|min|h|hour|d|day)", CLUSTERRA_API_RATE):
    raise env.ConfigError(
        f"CLUSTERRA_API_RATE={CLUSTERRA_API_RATE!r} is not a rate such as 120/min or 5000/h"
    )

# Mail (the demo's sign-in links). Without a mail server, mail is printed to the console's log,
# which is what `make demo` wants: the newcomer copies the link from their terminal.
EMAIL_HOST = os.environ.get("CLUSTERRA_EMAIL_HOST", "").strip()
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env.integer("CLUSTERRA_EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("CLUSTERRA_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("CLUSTERRA_EMAIL_PASSWORD", "")
_email_security = os.environ.get("CLUSTERRA_EMAIL_SECURITY", "starttls").strip().lower()
if _email_security not in {"starttls", "tls", "none"}:
    raise env.ConfigError(
        f"CLUSTERRA_EMAIL_SECURITY={_email_security!r} is not one of starttls, tls (implicit, port 465), none"
    )
EMAIL_USE_TLS = _email_security == "starttls"
EMAIL_USE_SSL = _email_security == "tls"
# A mail server that hangs must not hold a web worker for minutes.
EMAIL_TIMEOUT = env.integer("CLUSTERRA_EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("CLUSTERRA_EMAIL_FROM", "Clusterra <clusterra@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# The self-service demo (accounts.demo, access.demo): closed unless a cluster is named.
CLUSTERRA_DEMO_CLUSTER = os.environ.get("CLUSTERRA_DEMO_CLUSTER", "").strip()
CLUSTERRA_DEMO_OPEN = env.flag("CLUSTERRA_DEMO_OPEN", True)
CLUSTERRA_DEMO_DAYS = env.integer("CLUSTERRA_DEMO_DAYS", 7)
CLUSTERRA_DEMO_MAX_PEOPLE = env.integer("CLUSTERRA_DEMO_MAX_PEOPLE", 100)
CLUSTERRA_DEMO_SIGNUPS_PER_HOUR = env.integer("CLUSTERRA_DEMO_SIGNUPS_PER_HOUR", 5)
CLUSTERRA_DEMO_LINK_MINUTES = env.integer("CLUSTERRA_DEMO_LINK_MINUTES", 60)
# What `seed_demo` and each new demo person get; the rows can be edited in the admin afterwards.
CLUSTERRA_DEMO_PARTITION = os.environ.get("CLUSTERRA_DEMO_PARTITION", "debug").strip()
CLUSTERRA_DEMO_MAX_RUNNING_JOBS = env.integer("CLUSTERRA_DEMO_MAX_RUNNING_JOBS", 2)
CLUSTERRA_DEMO_MAX_WALLTIME = env.integer("CLUSTERRA_DEMO_MAX_WALLTIME", 10)
CLUSTERRA_DEMO_CPU_HOURS_PER_DAY = float(os.environ.get("CLUSTERRA_DEMO_CPU_HOURS_PER_DAY", "1"))

# How long the console waits for slurmrestd; a slow cluster must not hold a web worker forever.
SLURM_CONNECT_TIMEOUT = float(os.environ.get("CLUSTERRA_SLURM_CONNECT_TIMEOUT", "5"))
SLURM_READ_TIMEOUT = float(os.environ.get("CLUSTERRA_SLURM_READ_TIMEOUT", "30"))
# How long a sync round waits for one cluster (jobs.sync): a cluster still busy then goes on in the
# background and is skipped by the next rounds until it is done, so it delays no other cluster. As long
# as one unanswered slurmrestd request may take: waiting longer would be waiting for nothing.
CLUSTERRA_SYNC_CLUSTER_SECONDS = env.integer("CLUSTERRA_SYNC_CLUSTER_SECONDS", 30, minimum=1)
# Each process holds the compiled policy in memory (access.held); another process's change reaches its
# read-only decisions within this many seconds (0: a version check at every decision). Reservations read
# the database.
CLUSTERRA_POLICY_FRESHNESS_SECONDS = env.integer("CLUSTERRA_POLICY_FRESHNESS_SECONDS", 1, minimum=0)
# A submit whose answer was lost keeps its budget reservation this long while the sync loop looks for
# its job by tag (jobs/claims.py); then it is released. Longer than a few sync rounds (10 s each).
CLUSTERRA_SUBMIT_CONFIRM_SECONDS = env.integer("CLUSTERRA_SUBMIT_CONFIRM_SECONDS", 120)
if CLUSTERRA_SUBMIT_CONFIRM_SECONDS < 30:
    raise env.ConfigError(
        f"CLUSTERRA_SUBMIT_CONFIRM_SECONDS={CLUSTERRA_SUBMIT_CONFIRM_SECONDS} must be at least 30: a shorter "
        "window would release the budget of a job Slurm queued before a sync round could see it"
    )
# Submitting by script_path: the most of a script the console reads (and parses for #SBATCH lines), and
# the walltime in minutes of a job that asks for none on a partition that names no default either.
CLUSTERRA_MAX_SCRIPT_BYTES = env.integer("CLUSTERRA_MAX_SCRIPT_BYTES", 1024 * 1024)
CLUSTERRA_DEFAULT_TIME_LIMIT = env.integer("CLUSTERRA_DEFAULT_TIME_LIMIT", 60)
# Files (the person's home in the browser): the largest file the editor opens, an upload may bring and a
# download may take; each travels whole through one head-node command as the person. The editor's text is
# posted as a form field, so DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) must hold it with CRLF line breaks.
CLUSTERRA_MAX_EDIT_BYTES = env.integer("CLUSTERRA_MAX_EDIT_BYTES", 1024 * 1024, minimum=1)
CLUSTERRA_MAX_UPLOAD_BYTES = env.integer("CLUSTERRA_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1)
CLUSTERRA_MAX_DOWNLOAD_BYTES = env.integer("CLUSTERRA_MAX_DOWNLOAD_BYTES", 20 * 1024 * 1024, minimum=1)

# Browser terminals. The longest one may stay open: a working day at the terminal, and a forgotten tab
# does not live for weeks (a cluster may set its own). How long a shell waits for its page to come back
# after the connection dropped (laptop lid, Wi-Fi).
CLUSTERRA_TERMINAL_MAX_MINUTES = env.integer("CLUSTERRA_TERMINAL_MAX_MINUTES", 12 * 60, minimum=1)
CLUSTERRA_TERMINAL_RESUME_SECONDS = env.integer("CLUSTERRA_TERMINAL_RESUME_SECONDS", 120, minimum=1)
# Where shells are held (terminal.keeper): empty, in the web worker that opened them (one process: the
# demo); a UNIX socket path, in the shell keeper listening there (`manage.py keep_shells`), so that a
# worker's restart or a reconnect through another worker finds the same shell.
CLUSTERRA_SHELL_KEEPER = os.environ.get("CLUSTERRA_SHELL_KEEPER", "").strip()
# Recordings (asciicast v2) are written here, and spooled here before an upload when S3 keeps them.
CLUSTERRA_RECORDINGS_DIR = Path(os.environ.get("CLUSTERRA_RECORDINGS_DIR") or DATA_DIR / "recordings")
CLUSTERRA_RECORDINGS_S3 = os.environ.get("CLUSTERRA_RECORDINGS_S3", "").strip()
# A CloudWatch Logs group: recordings are streamed there too, as the session goes (<cluster>/<session id>).
CLUSTERRA_RECORDINGS_CLOUDWATCH = os.environ.get("CLUSTERRA_RECORDINGS_CLOUDWATCH", "").strip()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {"no_template_context": {"()": "clusterra_site.security.DropTemplateContext"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CLUSTERRA_LOG_LEVEL", "INFO")},
    "loggers": {
        # botocore logs request bodies at DEBUG; a secret must never reach a log.
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # At DEBUG it attaches the whole template context (a new API token, say) to a log line.
        "django.template": {"filters": ["no_template_context"]},
    },
}
