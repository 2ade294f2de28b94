"""Periodic job scheduler. Exactly one should run per app.

Run by the deploy tool as:  python -m scheduler

Every SCHEDULE_SECONDS (default 5) it RPUSHes a JSON job
{"at": <ISO time>, "pid": <pid>, "release": <release id>} onto <app>:jobs, as
long as it holds the lock <app>:scheduler:lock (SET <hostname:pid> NX EX 30,
refreshed on every tick). If another scheduler holds the lock it logs an error
loudly, INCRs <app>:scheduler:conflicts, schedules nothing and keeps retrying.

So that tests can spot two schedulers, on start it INCRs <app>:scheduler:starts
and SADDs its hostname:pid to the set <app>:scheduler:running; on a graceful
exit (SIGTERM/SIGINT) it SREMs itself and releases the lock if it is its own.
Without REDIS_URL it logs that and idles instead of crash-looping.
"""
import datetime
import json
import logging
import os
import signal
import socket
import sys
import time

from ready import notify_ready

APP = os.environ.get("APP_NAME") or "sample"
RELEASE = os.path.basename(os.getcwd())
IDENT = "%s:%d" % (socket.gethostname(), os.getpid())
JOBS_KEY = "%s:jobs" % APP
LOCK_KEY = "%s:scheduler:lock" % APP
STARTS_KEY = "%s:scheduler:starts" % APP
RUNNING_KEY = "%s:scheduler:running" % APP
CONFLICTS_KEY = "%s:scheduler:conflicts" % APP

# Take the lock, or refresh it if it is already ours. Returns 1 if we hold it.
ACQUIRE_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Delete the lock only if it is ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

log = logging.getLogger("scheduler")
_stop = False


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _sleep_until(deadline):
    """Sleeps until deadline, or until SIGTERM/SIGINT: a stop is seen at once.

    The signals are blocked (see main) and taken here, between ticks: no
    handler interrupts a Redis call halfway, and none races the sleep. (A
    child process would inherit the block: this scheduler starts none.)
    """
    global _stop
    while not _stop:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if signal.sigtimedwait(_STOP_SIGNALS, left) is not None:
            _stop = True


def run():
    url = os.environ.get("REDIS_URL")
    if not url:
        log.warning("REDIS_URL is not set: nothing to schedule, idling until stopped")
        notify_ready()
        while not _stop:
            _sleep_until(time.monotonic() + 60)
        return

    import redis

    interval = float(os.environ.get("SCHEDULE_SECONDS") or 5)
    lock_ttl = max(30, int(interval * 3))
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    acquire = client.register_script(ACQUIRE_LUA)
    release = client.register_script(RELEASE_LUA)
    log.info(
        "scheduler starting: app=%s release=%s ident=%s every %ss",
        APP, RELEASE, IDENT, interval,
    )

    registered = False
    holding = None
    redis_ok = None
    next_tick = time.monotonic()
    while not _stop:
        try:
            if not registered:
                pipe = client.pipeline(transaction=True)
                pipe.incr(STARTS_KEY)
                pipe.sadd(RUNNING_KEY, IDENT)
                starts = pipe.execute()[0]
                registered = True
                log.info("registered as %s in %s (starts=%s)", IDENT, RUNNING_KEY, starts)
                notify_ready()
            if acquire(keys=[LOCK_KEY], args=[IDENT, lock_ttl]) == 1:
                if holding is not True:
                    log.info("holding scheduler lock %s", LOCK_KEY)
                holding = True
                job = json.dumps({
                    "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                    "pid": os.getpid(),
                    "release": RELEASE,
                })
                client.rpush(JOBS_KEY, job)
                log.info("scheduled %s", job)
            else:
                holding = False
                owner = client.get(LOCK_KEY)
                client.incr(CONFLICTS_KEY)
                log.error(
                    "ANOTHER SCHEDULER IS RUNNING: %s is held by %s (we are %s); "
                    "not scheduling, retrying in %ss",
                    LOCK_KEY, owner.decode() if owner else "?", IDENT, interval,
                )
            redis_ok = True
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if redis_ok is not False:
                log.error("Redis unavailable (%s); retrying", exc)
            redis_ok = False
        next_tick += interval
        if next_tick < time.monotonic():  # fell behind (e.g. Redis was down)
            next_tick = time.monotonic() + interval
        _sleep_until(next_tick)

    try:
        if registered:
            client.srem(RUNNING_KEY, IDENT)
            release(keys=[LOCK_KEY], args=[IDENT])
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.error("could not unregister from Redis on exit: %s", exc)
    client.close()


def main():
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
        stream=sys.stderr,
    )
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    run()
    log.info("scheduler stopped gracefully")
    return 0


if __name__ == "__main__":
    sys.exit(main())
