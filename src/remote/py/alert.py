# The alert program of one app (/usr/local/sbin/metalship-alert-APP), its
# SETTINGS filled in by provision. Run by systemd only, as root:
#   unit NAME   a unit failed (the OnFailure= handler): kind "backup" for the
#               backup service, "unit" for any other
#   check       the periodic checks: disk use, certificate expiry, the age of
#               the last restore test; one alert per problem, then the heartbeat
#   test        one alert of kind "test" (to try the webhook by hand)
# Each alert is one POST of JSON {host, app, kind, detail, time}. The URLs are
# secrets: they stay in root-only curl config files (curl -K), never on a
# command line, and the JSON goes to curl on stdin.
import datetime
import glob
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time

# Replaced by provision with this host's settings (a JSON string literal).
SETTINGS = json.loads("{}")

# An alert about the same thing is sent again after this (the checks run hourly).
REPEAT_SECONDS = 50 * 60

CURL = [
    "/usr/bin/curl", "--disable", "--fail", "--silent", "--show-error", "--globoff",
    "--path-as-is", "--max-time", "10", "--retry", "3", "--output", "/dev/null",
]


def curl(config, extra, data=None):
    r = subprocess.run(CURL + ["--config", config] + extra, input=data,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        # curl names the host at most: the URL's path and query (the token) are not in its messages.
        print("sending to the URL of %s failed: %s" % (config, r.stderr.decode(errors="replace").strip()[-300:]),
              file=sys.stderr)
    return r.returncode == 0


def mark(key):
    """The file whose time is when the alert of that key was last sent (systemd's StateDirectory=)."""
    return os.path.join(os.environ.get("STATE_DIRECTORY", "/nonexistent"), hashlib.sha256(key.encode()).hexdigest())


def repeated(key):
    """True when the same alert was sent less than REPEAT_SECONDS ago (a unit failing
    every minute, a disk full at each check): it is sent again after that."""
    try:
        return time.time() - os.stat(mark(key)).st_mtime < REPEAT_SECONDS
    except OSError:
        return False


def sent_now(key):
    try:
        with open(mark(key), "w"):
            pass
    except OSError:
        pass


def send(kind, detail, key=None):
    """Sends one alert; key names what it is about (a repeat of the same key is held back)."""
    if key and repeated(kind + ":" + key):
        print("alert %s held back (sent less than %d minutes ago): %s" % (kind, REPEAT_SECONDS // 60, detail))
        return True
    body = json.dumps({
        "host": socket.getfqdn(),
        "app": SETTINGS["app"],
        "kind": kind,
        "detail": detail,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    print("alert %s: %s" % (kind, detail))
    ok = curl(SETTINGS["webhook"], ["--header", "Content-Type: application/json", "--data-binary", "@-"],
              body.encode())
    if ok and key:
        sent_now(kind + ":" + key)
    return ok


def failed_unit(name):
    show = subprocess.run(["systemctl", "show", "--property", "Result,InvocationID", "--", name],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    props = dict(line.partition("=")[::2] for line in show.stdout.splitlines())
    detail = "%s failed (result: %s)" % (name, props.get("Result") or "unknown")
    if name == SETTINGS["backup_unit"]:
        # The backup program's own output (its identifier in the journal is its name; systemd's
        # lines are left out), never the app's output, which may hold secrets.
        run = ["_SYSTEMD_INVOCATION_ID=" + props["InvocationID"]] if props.get("InvocationID") else []
        log = subprocess.run(["journalctl", "--unit", name, "--identifier", name.rsplit(".", 1)[0],
                              "--lines", "3", "--output", "cat", "--no-pager"] + run,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
        last = " / ".join(line for line in log.stdout.splitlines() if line.strip())[-500:]
        return send("backup", detail + (": " + last if last else ""), name)
    return send("unit", detail, name)


def disk_problems():
    problems, seen = [], set()
    for path in SETTINGS["disk_paths"]:
        try:
            dev = os.stat(path).st_dev
            st = os.statvfs(path)
        except OSError:
            continue
        if dev in seen:
            continue
        seen.add(dev)
        used = st.f_blocks - st.f_bfree
        # As df counts it: of the space ordinary users can have (the root reserve left out).
        percent = 100.0 * used / (used + st.f_bavail) if used + st.f_bavail else 0.0
        if percent > SETTINGS["disk_percent"]:
            problems.append(("disk", path, "%s: %.1f%% of its filesystem is used, over %d%%"
                             % (path, percent, SETTINGS["disk_percent"])))
    return problems


def certificate_problems():
    return [p for path in SETTINGS["certificates"] for p in certificate_problem(path)]


def certificate_problem(path):
    if not os.path.exists(path):
        return [("certificate", path, "%s is missing" % path)]
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    end = out.stdout.strip().partition("=")[2]
    try:
        days = (ssl.cert_time_to_seconds(end) - time.time()) / 86400
    except ValueError:
        return [("certificate", path, "%s is unreadable: %s" % (path, out.stderr.strip()[-200:]))]
    if days < SETTINGS["certificate_days"]:
        what = "expired %.1f days ago" % -days if days < 0 else "expires in %.1f days" % days
        return [("certificate", path, "%s %s (%s), under %d days"
                 % (path, what, end, SETTINGS["certificate_days"]))]
    return []


def restore_problems():
    record, limit = SETTINGS["restore_record"], SETTINGS["restore_days"]
    if not record:
        return []
    now = time.time()
    if not os.path.exists(record):
        # Never verified: a problem once the oldest backup kept is older than the limit.
        manifests = glob.glob(os.path.join(os.path.dirname(record), "*.manifest.json"))
        oldest = min((os.stat(m).st_mtime for m in manifests), default=now)
        if (now - oldest) / 86400 > limit:
            return [("restore-test", record, "no restore test of the backups is recorded (%s), and backups exist "
                     "for %.0f days: run backup-verify" % (record, (now - oldest) / 86400))]
        return []
    try:
        with open(record) as f:
            verified = json.load(f)["verified"]
        when = datetime.datetime.fromisoformat(verified.replace("Z", "+00:00")).timestamp()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [("restore-test", record, "the record of the last restore test (%s) is unreadable" % record)]
    days = (now - when) / 86400
    if days > limit:
        return [("restore-test", record, "the backups were last proven to restore %.1f days ago (%s), over %d days: "
                 "is the restore test still running?" % (days, verified, limit))]
    return []


def check():
    problems = disk_problems() + certificate_problems() + restore_problems()
    sent = all([send(kind, detail, key) for kind, key, detail in problems])
    if not problems:
        print("checks passed: %s" % ", ".join(SETTINGS["disk_paths"]))
    # The heartbeat says that the checks ran (the alerts say what they found).
    if SETTINGS["heartbeat"] and os.path.exists(SETTINGS["heartbeat"]):
        sent = curl(SETTINGS["heartbeat"], []) and sent
    return sent


def main():
    what = sys.argv[1:2]
    if what == ["unit"] and len(sys.argv) == 3:
        ok = failed_unit(sys.argv[2])
    elif what == ["check"]:
        ok = check()
    elif what == ["test"]:
        ok = send("test", "a test alert, sent by hand")
    else:
        print("usage: %s unit NAME | check | test" % sys.argv[0], file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if ok else 1)


main()
