"""Sample web service deployed by metalship.

Run by the deploy tool as:  uvicorn main:app --uds <socket>
with its working directory inside /opt/<app>/releases/<id>.

Written for Debian 12's python3-fastapi 0.92 / uvicorn 0.17 (no `lifespan=`:
startup/shutdown use app.on_event).
"""
import asyncio
import logging
import os
import socket

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from version import VERSION

# A release that cannot start: importing the app fails.
if os.path.exists("FAIL_START"):
    raise RuntimeError("FAIL_START file present in %s: refusing to start" % os.getcwd())

# The release id is the name of the release directory the process runs in.
# os.getcwd() returns the resolved path, so a WorkingDirectory that goes through
# a "current" symlink still yields /opt/<app>/releases/<id>.
RELEASE = os.path.basename(os.getcwd())

# A release that passes readiness but fails verification (/health, /version):
# everywhere, or only on the host named in a FAIL_HEALTH_ON_<hostname> file.
FAIL_HEALTH = os.path.exists("FAIL_HEALTH") or os.path.exists(
    "FAIL_HEALTH_ON_" + socket.gethostname()
)

CONNECT_TIMEOUT = 2  # seconds, for the Redis and PostgreSQL checks in /health
MAX_SLOW_SECONDS = 10

# A child of uvicorn's logger, so messages use the handlers uvicorn configures.
log = logging.getLogger("uvicorn.error.sample_app")

app = FastAPI(title="metalship sample app", version=VERSION)
app.state.shutting_down = False


def _begin_shutdown(reason):
    if not app.state.shutting_down:
        app.state.shutting_down = True
        log.info("shutdown begun (%s): /health/ready now answers 503", reason)


def _hook_uvicorn_signal_handler():
    """Flag shutdown as soon as uvicorn receives SIGTERM/SIGINT.

    uvicorn installs its own signal handlers, and only runs the app's shutdown
    event after it has stopped accepting connections and drained in-flight
    requests. To answer 503 on /health/ready from the moment the signal
    arrives, wrap uvicorn's Server.handle_exit. uvicorn binds that method when
    it installs its handlers, which happens after it has imported this module,
    so patching the class here is enough. Harmless if uvicorn is absent.
    """
    try:
        from uvicorn.server import Server
    except Exception:  # pragma: no cover - not running under uvicorn
        return
    original = Server.handle_exit
    if getattr(original, "_sample_app_wrapped", False):
        return

    def handle_exit(self, sig, frame):
        _begin_shutdown("signal %s" % sig)
        return original(self, sig, frame)

    handle_exit._sample_app_wrapped = True
    Server.handle_exit = handle_exit


_hook_uvicorn_signal_handler()


@app.on_event("startup")
async def on_startup():
    log.info(
        "sample app %s starting: release=%s fail_health=%s redis=%s database=%s",
        VERSION,
        RELEASE,
        FAIL_HEALTH,
        "configured" if os.environ.get("REDIS_URL") else "not configured",
        "configured" if os.environ.get("DATABASE_URL") else "not configured",
    )


@app.on_event("shutdown")
async def on_shutdown():
    _begin_shutdown("shutdown event")


def _failing():
    return JSONResponse(
        status_code=500,
        content={
            "status": "failing",
            "detail": "FAIL_HEALTH file present (for this host)",
            "release": RELEASE,
            "version": VERSION,
        },
    )


@app.get("/health/ready")
async def ready():
    """Shallow readiness: no dependency checks; 503 once shutdown has begun."""
    if app.state.shutting_down:
        return JSONResponse(
            status_code=503, content={"status": "shutting down", "release": RELEASE}
        )
    return {"status": "healthy", "release": RELEASE}


def _check_redis(url):
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()


_engine = None


def _database_url(url):
    # SQLAlchemy 1.4 rejects the "postgres://" spelling some tools produce.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    return url


def _check_database(url):
    global _engine
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    if _engine is None:
        # NullPool: every check opens a fresh connection, so it really is deep.
        _engine = create_engine(
            _database_url(url),
            poolclass=NullPool,
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
        )
    with _engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _run_check(env_var, check):
    url = os.environ.get(env_var)
    if not url:
        return "not configured", True
    try:
        check(url)
        return "ok", True
    except Exception as exc:  # report, never crash the health endpoint
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ("error: %s: %s" % (type(exc).__name__, message))[:300], False


@app.get("/health")
def health():
    """Deep check. A plain `def`: FastAPI runs it in a thread, so the blocking
    Redis/PostgreSQL clients do not stall the event loop."""
    if FAIL_HEALTH:
        return _failing()
    redis_status, redis_ok = _run_check("REDIS_URL", _check_redis)
    db_status, db_ok = _run_check("DATABASE_URL", _check_database)
    healthy = redis_ok and db_ok
    return JSONResponse(
        status_code=200 if healthy else 503,
        content={
            "status": "healthy" if healthy else "unhealthy",
            "release": RELEASE,
            "version": VERSION,
            "redis": redis_status,
            "database": db_status,
        },
    )


@app.get("/version")
async def version():
    if FAIL_HEALTH:
        return _failing()
    return {"release": RELEASE, "version": VERSION}


@app.get("/", response_class=PlainTextResponse)
async def index():
    return "hello from %s (%s)" % (RELEASE, VERSION)


@app.get("/slow")
async def slow(seconds: float = Query(1.0, ge=0, le=MAX_SLOW_SECONDS)):
    """Sleeps without blocking the server; used to check that in-flight
    requests survive a release switch."""
    await asyncio.sleep(seconds)
    return {"status": "ok", "slept": seconds, "release": RELEASE, "version": VERSION}
