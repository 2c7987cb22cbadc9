"""Django settings for the bank site; per-host values come from the TOML file named by BANK_CONFIG."""
import os

from bank import config

BASE_DIR = config.APP_DIR

CONFIG_PATH = os.environ.get("BANK_CONFIG", config.DEFAULT_PATH)
DEV_MODE = os.environ.get("BANK_DEV", "").strip().lower() in ("1", "true", "yes", "on")
CONF = config.load(CONFIG_PATH, dev=DEV_MODE)
if CONF["source"] == config.DEV_SOURCE:
    # sqlite cannot create the directory of its database file itself.
    config.DEV_DIR.mkdir(exist_ok=True)

SECRET_KEY = CONF["secret_key"]
DEBUG = CONF["debug"]
ALLOWED_HOSTS = CONF["allowed_hosts"]
CSRF_TRUSTED_ORIGINS = CONF["csrf_trusted_origins"]

INSTALLED_APPS = [
    # First, so its registration/login.html wins over any shipped by contrib apps.
    "accounts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "haystack",  # the search page (accounts.search); its update_index/rebuild_index commands
]

MIDDLEWARE = [
    # Outermost, so error responses produced by inner middleware carry the header too.
    "accounts.middleware.ServedByMiddleware",
    # Before SecurityMiddleware, whose HTTPS redirect believes the X-Forwarded-Proto this leaves in place.
    "accounts.middleware.TrustedProxyMiddleware",
    # Marks the read-only report's requests, whose reads bank.routers sends to the standby when there is one.
    "bank.routers.ReplicaReadsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bank.urls"
WSGI_APPLICATION = "bank.wsgi.application"

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

DATABASES = config.databases(CONF)
DATABASE_ROUTERS = ["bank.routers.ReplicaRouter"]
CACHES = config.caches(CONF)
# The search page through Haystack (step 6's search hosts; accounts.search): an account is indexed as its change
# commits, on every search server (the router writes everywhere; reads go to the first that answers).
HAYSTACK_CONNECTIONS = config.haystack_connections(CONF)
HAYSTACK_ROUTERS = ["accounts.search.EverySearchServerRouter"]
HAYSTACK_SIGNAL_PROCESSOR = "accounts.search.AccountSignalProcessor"
BANK_SEARCH_ALIASES = [config.search_alias(i) for i in range(len(CONF["search_servers"]))]

# Celery (bank.celery reads these): Redis on the queue tier's q1, or with no queue host every task runs in the request.
globals().update(config.celery_settings(CONF))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = CONF["static_root"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names + staticfiles.json let nginx serve /static/ with far-future expiry.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# HTTPS ends at the balancer, which tells the site so in X-Forwarded-Proto (nginx sets it on every request,
# replacing whatever a client sent). TrustedProxyMiddleware drops the header from anyone but these addresses.
BANK_TRUSTED_PROXIES = CONF["trusted_proxies"]
# The slides' anti-patterns the site is switched to (`lab demo shared-nothing`); none on a lab's own site.
BANK_ANTIPATTERNS = frozenset(CONF["antipatterns"])
if CONF["https"]:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # The balancer's and lab's own probes ask each web host directly, in plain HTTP on its private address.
    SECURE_REDIRECT_EXEMPT = [r"^health/$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 365 * 24 * 3600
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        # stderr ends up in the Gunicorn error log / journald / Apache error log.
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # Replace Django's default handlers (console only under DEBUG, mail_admins)
        # so that production errors are written to stderr, not emailed to nobody.
        "django": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
