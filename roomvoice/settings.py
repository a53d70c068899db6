"""roomvoice settings: one module, driven by the environment.

With no environment at all this is the *embedded default*: a SQLite file under ``var/``,
Channels' in-memory layer and eager Celery, served on localhost. Production differs only by
environment variables; see README "Configuration" for the full list. Every variable is read
through ``roomvoice.lib.env``, which refuses malformed values at start-up.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import dj_database_url

from roomvoice.lib.env import (
    EnvError,
    env_bool,
    env_float,
    env_ice_servers,
    env_int,
    env_list,
    env_optional_str,
    env_str,
    env_url,
)
from roomvoice.lib.secrets import derive_fernet_key, new_token

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("ROOMVOICE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret_key() -> str:
    """A random key kept in DATA_DIR, made on first start: never a key from the source."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_token(48))
    return path.read_text().strip()


# --- Core -----------------------------------------------------------------------------------

SECRET_KEY = env_optional_str("SECRET_KEY") or _local_secret_key()
if len(SECRET_KEY) < 32:
    raise EnvError("SECRET_KEY", "***", "at least 32 characters")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise EnvError("CSRF_TRUSTED_ORIGINS", _origin, "origins starting with http:// or https://")

INSTALLED_APPS = [
    "daphne",  # first: its runserver serves HTTP and WebSockets
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "channels",
    "roomvoice",
    "rooms",
    "providers",
    "voice",
    "telephony",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "roomvoice.urls"
ASGI_APPLICATION = "roomvoice.asgi.application"
AUTH_USER_MODEL = "rooms.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Database -------------------------------------------------------------------------------

DATABASE_URL = env_url("DATABASE_URL", schemes=frozenset({"postgres", "postgresql", "sqlite"}))
DATABASES: dict[str, Any]
if DATABASE_URL:
    DATABASES = {
        "default": dict(
            dj_database_url.parse(
                DATABASE_URL,
                conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
                conn_health_checks=True,
            )
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            "OPTIONS": {
                # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue for
                # `timeout` seconds instead of failing with "database is locked" mid-way.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

# --- Redis: channel layer and Celery broker -------------------------------------------------

REDIS_URL = env_url("REDIS_URL", schemes=frozenset({"redis", "rediss", "unix"}))
CHANNELS_PREFIX = env_str("CHANNELS_PREFIX", "roomvoice")
CHANNELS_CAPACITY = env_int("CHANNELS_CAPACITY", 100, minimum=1)
CHANNEL_LAYERS: dict[str, Any]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # The layer's receive blocks on BZPOPMIN for up to 5 s; redis-py's default
                # socket_timeout is also 5 s, which cut those reads ("Timeout reading from")
                # and broke every consumer idle for 5 s (django/channels_redis#422). Any
                # socket_timeout also left the layer's per-loop state broken across event
                # loops in the tests' consumers, so reads have none: TCP keepalive finds a
                # dead server instead, and connecting still times out.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "socket_keepalive": True,
                        "socket_connect_timeout": 5,
                    }
                ],
                "prefix": CHANNELS_PREFIX,
                "capacity": CHANNELS_CAPACITY,
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", schemes=frozenset({"redis", "rediss", "amqp", "amqps"})
) or (REDIS_URL or "memory://")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None  # results travel through the database and the channel layer
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "tools"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90, minimum=1)
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 3.0, minimum=0.1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise EnvError(
        "CELERY_TASK_SOFT_TIME_LIMIT",
        str(CELERY_TASK_SOFT_TIME_LIMIT),
        f"a value below CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT})",
    )

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Security -------------------------------------------------------------------------------

# ROOMVOICE_HTTPS=true when the site is served over TLS (directly or behind a proxy that sets
# X-Forwarded-Proto). It turns on secure cookies, HSTS and the HTTPS redirect. The embedded
# default is plain HTTP on localhost, where those would lock the browser out.
HTTPS = env_bool("ROOMVOICE_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("ROOMVOICE_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is a one-way commitment for a domain; operators opt in with
    # SECURE_HSTS_PRELOAD=true once they mean it.
    "security.W021",
]

# Secrets at rest (provider credentials): Fernet keys, first one encrypts, all decrypt.
# Unset, a key is derived from SECRET_KEY (fine locally; `check --deploy` warns, because
# rotating SECRET_KEY would then make stored credentials unreadable).
_encryption_keys = env_list("ROOMVOICE_ENCRYPTION_KEYS", [])
ROOMVOICE_ENCRYPTION_KEYS_DERIVED = not _encryption_keys
ROOMVOICE_ENCRYPTION_KEYS = _encryption_keys or [
    derive_fernet_key(SECRET_KEY, purpose="roomvoice.credentials")
]

# --- Tools ----------------------------------------------------------------------------------

# Python callables a tenant's Tool may name: exact dotted paths, or module prefixes ending
# in "." ("myapp.tools."). Empty: only webhook tools can be defined.
ROOMVOICE_TOOL_HANDLER_ALLOWLIST = env_list("ROOMVOICE_TOOL_HANDLER_ALLOWLIST", [])
# Webhook tools (voice/tools/webhook.py): private, loopback and link-local targets (and plain
# http) are refused unless this is on, e.g. for local development; the response body limit.
ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE = env_bool("ROOMVOICE_TOOL_WEBHOOK_ALLOW_PRIVATE", False)
ROOMVOICE_TOOL_WEBHOOK_MAX_BYTES = env_int(
    "ROOMVOICE_TOOL_WEBHOOK_MAX_BYTES", 256 * 1024, minimum=1, maximum=64 * 1024 * 1024
)
# A dotted path to ``async def authenticate(connection) -> dict | None``: admits voice
# callers who have neither a login nor a room token (docs/protocol.md).
ROOMVOICE_VOICE_AUTHENTICATE = env_str("ROOMVOICE_VOICE_AUTHENTICATE", "")

# --- WebRTC (voice/webrtc.py, README "WebRTC") -----------------------------------------------

#: STUN/TURN servers for the server's and the browsers' peer connections (JSON, see
#: roomvoice.lib.env.env_ice_servers); none: host candidates only (one network, no NAT).
ROOMVOICE_WEBRTC_ICE_SERVERS = env_ice_servers("ROOMVOICE_WEBRTC_ICE_SERVERS")
#: WebRTC calls this process holds at once (then 503 busy).
ROOMVOICE_WEBRTC_MAX_PEERS = env_int("ROOMVOICE_WEBRTC_MAX_PEERS", 50, minimum=1, maximum=10_000)
#: A peer that has not connected this long after its answer, or sends no audio for this
#: long once connected (browsers send audio continuously, even muted), is hung up.
ROOMVOICE_WEBRTC_CONNECT_TIMEOUT_S = env_float(
    "ROOMVOICE_WEBRTC_CONNECT_TIMEOUT_S", 30.0, minimum=1.0, maximum=600.0
)
ROOMVOICE_WEBRTC_MEDIA_TIMEOUT_S = env_float(
    "ROOMVOICE_WEBRTC_MEDIA_TIMEOUT_S", 20.0, minimum=1.0, maximum=3600.0
)

# --- Telephony (telephony/, README "Phone calls") -------------------------------------------

#: ``manage.py runsip``: where it listens (UDP and TCP), the address it puts in SDP and
#: Contact (the public one behind NAT; blank: the bind address, or this host's when that is
#: 0.0.0.0), the RTP port range, and how many calls it holds at once (then 486 Busy Here).
ROOMVOICE_SIP_BIND = env_str("ROOMVOICE_SIP_BIND", "0.0.0.0:5060")
ROOMVOICE_SIP_ADVERTISED_IP = env_str("ROOMVOICE_SIP_ADVERTISED_IP", "")
ROOMVOICE_SIP_RTP_PORTS = env_str("ROOMVOICE_SIP_RTP_PORTS", "20000-20999")
ROOMVOICE_SIP_MAX_CALLS = env_int("ROOMVOICE_SIP_MAX_CALLS", 50, minimum=1, maximum=10_000)
#: Sources allowed for numbers without a trunk (addresses or CIDR networks).
ROOMVOICE_SIP_ALLOWED_SOURCES = env_list("ROOMVOICE_SIP_ALLOWED_SOURCES", ["127.0.0.0/8", "::1"])
#: Codecs offered, best first (G722 is 16 kHz wideband; PCMU/PCMA are 8 kHz G.711).
ROOMVOICE_SIP_CODECS = env_list("ROOMVOICE_SIP_CODECS", ["G722", "PCMU", "PCMA"])
#: A call that sends no RTP for this long is ended (seconds); RFC 4028 session interval.
ROOMVOICE_SIP_RTP_TIMEOUT_S = env_int("ROOMVOICE_SIP_RTP_TIMEOUT_S", 30, minimum=1, maximum=3600)
ROOMVOICE_SIP_SESSION_EXPIRES_S = env_int(
    "ROOMVOICE_SIP_SESSION_EXPIRES_S", 1800, minimum=90, maximum=86_400
)
ROOMVOICE_SIP_REALM = env_str("ROOMVOICE_SIP_REALM", "roomvoice")
#: The site's public base URL (https://voice.example.com): what Twilio calls and signs, and
#: where its media stream connects. Blank: taken from each request's Host and scheme.
ROOMVOICE_PUBLIC_URL = env_str("ROOMVOICE_PUBLIC_URL", "").rstrip("/")

# --- REST framework -------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.tenancy.TenantAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.PerPrincipalThrottle"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Page",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "URL_FORMAT_OVERRIDE": None,  # ?format= is the export format, not a renderer switch
}
#: Requests per API key (or per logged-in user) and period: "600/min", "20/s", "10000/day".
ROOMVOICE_API_RATE = env_str("ROOMVOICE_API_RATE", "600/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|m|min|h|hour|d|day)", ROOMVOICE_API_RATE):
    raise EnvError("ROOMVOICE_API_RATE", ROOMVOICE_API_RATE, "a rate such as 600/min")
#: Request bodies above this are refused (413); the API's documents are small.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1024, maximum=64 * 1024 * 1024
)

SPECTACULAR_SETTINGS = {
    "TITLE": "roomvoice API",
    "DESCRIPTION": "Rooms, channel bindings, room tokens, agents, tools, provider credentials, "
    "voice sessions, room timelines and tool calls of one tenant. Authenticate with "
    "`Authorization: Bearer rv_…` (a tenant API key).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"ProviderKindEnum": "providers.models.ProviderKind"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_error_responses",
    ],
}

# Throttle counters and other short-lived shared state: Redis when there is one (shared by
# every process), else this process's memory.
CACHES = (
    {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "roomvoice",
        }
    }
    if REDIS_URL
    else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
)

# --- Health endpoint ------------------------------------------------------------------------

HEALTHZ_TIMEOUT_SECONDS = env_float("HEALTHZ_TIMEOUT_SECONDS", 2.0, minimum=0.1)

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise EnvError("LOG_LEVEL", LOG_LEVEL, "DEBUG, INFO, WARNING, ERROR or CRITICAL")
LOG_FORMAT = env_str("LOG_FORMAT", "text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise EnvError("LOG_FORMAT", LOG_FORMAT, "text or json")

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "roomvoice.lib.logging.ContextFilter"},
        "redact": {"()": "roomvoice.lib.logging.RedactingFilter"},
    },
    "formatters": {
        "text": {"()": "roomvoice.lib.logging.KeyValueFormatter"},
        "json": {"()": "roomvoice.lib.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context", "redact"],
            "formatter": LOG_FORMAT,
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Request lines carry query strings; keep them at WARNING unless asked.
        "django.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # httpx logs every request URL at INFO; webhook URLs may carry tokens in the path.
        "httpx": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
    },
}
