"""Redis-backed background worker (in the spirit of Taskiq).

Run by the deploy tool as:  python -m worker

Loop: BLPOP (a quarter-second timeout) on the list <app>:jobs; for each job,
INCR <app>:done and LPUSH the job's payload onto <app>:results (trimmed to 100
entries). SIGTERM/SIGINT: the current job is finished, then the process exits 0
(within about a quarter second when idle, like a Taskiq worker cancelling its
listener; the BLPOP itself is never interrupted, so a job Redis has handed over
is never lost). Without REDIS_URL it logs that and idles instead of
crash-looping. WORKER_JOB_SECONDS (default 0) makes each job take that long,
to test that a job in progress survives a graceful stop; a job "hold:<name>"
lasts until a file of that name appears in the release directory (at most
HOLD_SECONDS), so a test can keep it in progress exactly as long as it needs.
"""
import logging
import os
import signal
import socket
import sys
import time

from ready import notify_ready

APP = os.environ.get("APP_NAME") or "sample"
RELEASE = os.path.basename(os.getcwd())
JOBS_KEY = "%s:jobs" % APP
DONE_KEY = "%s:done" % APP
RESULTS_KEY = "%s:results" % APP
RESULTS_KEEP = 100
# Seconds (Redis 6+ takes fractions): how long an idle worker takes to notice a stop.
BLPOP_TIMEOUT = 0.25
HOLD_SECONDS = 120

log = logging.getLogger("worker")
_stop = False


def _on_signal(signum, frame):
    global _stop
    _stop = True  # only set a flag here; the main loop does the rest
    log.info("stop requested (signal %s): finishing the job in progress", signum)


def _sleep(seconds):
    """Sleep in small steps so a stop request is honoured quickly."""
    end = time.monotonic() + seconds
    while not _stop and time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def _hold(name):
    """Waits (ignoring stop requests: the job is finished) for the file `name`."""
    end = time.monotonic() + HOLD_SECONDS
    plain = name.replace("-", "").replace("_", "").isalnum()
    while plain and time.monotonic() < end and not os.path.exists(name):
        time.sleep(0.1)


def _process(client, payload, job_seconds):
    if job_seconds > 0:
        time.sleep(job_seconds)  # a job in progress is finished, never cut short
    if payload.startswith(b"hold:"):
        _hold(payload[5:].decode("utf-8", "replace"))
    pipe = client.pipeline(transaction=True)
    pipe.incr(DONE_KEY)
    pipe.lpush(RESULTS_KEY, payload)
    pipe.ltrim(RESULTS_KEY, 0, RESULTS_KEEP - 1)
    done = pipe.execute()[0]
    log.info("processed job %s (done=%s)", payload.decode("utf-8", "replace"), done)


def run():
    url = os.environ.get("REDIS_URL")
    if not url:
        log.warning("REDIS_URL is not set: nothing to do, idling until stopped")
        notify_ready()
        while not _stop:
            _sleep(60)
        return

    import redis

    job_seconds = float(os.environ.get("WORKER_JOB_SECONDS") or 0)
    # socket_timeout must exceed the BLPOP timeout.
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=BLPOP_TIMEOUT + 4)
    log.info("worker started: app=%s release=%s pid=%s queue=%s", APP, RELEASE, os.getpid(), JOBS_KEY)
    connected = None
    notified = False
    while not _stop:
        try:
            if connected is not True:
                client.ping()
                log.info("connected to Redis")
                if not notified:
                    notify_ready()  # ready once it reaches its queue
                    notified = True
                connected = True
            item = client.blpop([JOBS_KEY], timeout=BLPOP_TIMEOUT)
            if item is not None:
                _process(client, item[1], job_seconds)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if connected is not False:
                log.error("Redis unavailable (%s); retrying every second", exc)
                connected = False
            _sleep(1)
    client.close()


def main():
    # A release whose worker cannot start, on the host named in a
    # FAIL_WORKER_ON_<hostname> file only (its api serves as usual).
    if os.path.exists("FAIL_WORKER_ON_" + socket.gethostname()):
        print("worker: FAIL_WORKER_ON_%s: exiting" % socket.gethostname(), file=sys.stderr)
        return 1
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    run()
    log.info("worker stopped gracefully")
    return 0


if __name__ == "__main__":
    sys.exit(main())
