"""Sample web service deployed by metalship.

Run by the deploy tool as:  uvicorn main:app --uds <socket>
with its working directory inside /opt/<app>/releases/<id>.

Runs on the FastAPI of Debian 11 to 13 (0.63 to 0.115): where FastAPI takes a
`lifespan=` (0.93+, Debian 13) startup and shutdown go through it, elsewhere
through app.on_event. GET /startup says which one ran.
"""
import asyncio
import contextlib
import inspect
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
MAX_SLOW_SECONDS = 120

# A child of uvicorn's logger, so messages use the handlers uvicorn configures.
log = logging.getLogger("uvicorn.error.sample_app")


def _on_startup(hook):
    app.state.startup_hook = hook
    log.info(
        "sample app %s starting (%s): release=%s fail_health=%s redis=%s database=%s",
        VERSION,
        hook,
        RELEASE,
        FAIL_HEALTH,
        "configured" if os.environ.get("REDIS_URL") else "not configured",
        "configured" if os.environ.get("DATABASE_URL") else "not configured",
    )


@contextlib.asynccontextmanager
async def _lifespan(_app):
    _on_startup("lifespan")
    yield
    _begin_shutdown("lifespan shutdown")


if "lifespan" in inspect.signature(FastAPI.__init__).parameters:
    app = FastAPI(title="metalship sample app", version=VERSION, lifespan=_lifespan)
else:
    app = FastAPI(title="metalship sample app", version=VERSION)

    @app.on_event("startup")
    async def on_startup():
        _on_startup("on_event")

    @app.on_event("shutdown")
    async def on_shutdown():
        _begin_shutdown("shutdown event")


app.state.shutting_down = False
app.state.startup_hook = None


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


def _database(url):
    global _engine
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if _engine is None:
        # NullPool: every check opens a fresh connection, so it really is deep.
        _engine = create_engine(
            _database_url(url),
            poolclass=NullPool,
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
        )
    return _engine


def _check_database(url):
    from sqlalchemy import text

    with _database(url).connect() as conn:
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


@app.get("/items")
def items():
    """The names in the items table (made by the migration), in id order:
    data read from the database in DATABASE_URL."""
    from sqlalchemy import text

    url = os.environ.get("DATABASE_URL")
    if not url:
        return JSONResponse(status_code=503, content={"error": "DATABASE_URL is not set"})
    with _database(url).connect() as conn:
        rows = conn.execute(text("SELECT name FROM items ORDER BY id")).fetchall()
    return {"release": RELEASE, "items": [r[0] for r in rows]}


@app.get("/startup")
async def startup():
    """Which startup hook ran: "lifespan" or "on_event" (null: none did)."""
    return {"hook": app.state.startup_hook}


@app.get("/version")
async def version():
    if FAIL_HEALTH:
        return _failing()
    return {"release": RELEASE, "version": VERSION}


@app.get("/greeting")
async def greeting():
    """GREETING from the release's .env: which env a release runs with."""
    return {"release": RELEASE, "greeting": os.environ.get("GREETING")}


@app.get("/", response_class=PlainTextResponse)
async def index():
    return "hello from %s (%s)" % (RELEASE, VERSION)


@app.get("/slow")
async def slow(
    seconds: float = Query(1.0, ge=0, le=MAX_SLOW_SECONDS), until: str = Query("")
):
    """Sleeps without blocking the server; used to check that in-flight
    requests survive a release switch and their process's stop. With `until`
    (a plain name), it ends early once a file of that name appears in the
    release directory, so a test can hold it open exactly as long as it needs."""
    if until and not until.replace("-", "").replace("_", "").isalnum():
        return JSONResponse(status_code=422, content={"detail": "until: a plain file name"})
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and not (until and os.path.exists(until)):
        await asyncio.sleep(0.1)
    return {
        "status": "ok",
        "release": RELEASE,
        "version": VERSION,
        "until": bool(until) and os.path.exists(until),
    }
