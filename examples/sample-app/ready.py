"""sd_notify READY=1: the process tells systemd it can take work.

Under a Type=notify unit (metalship's `units-ready: notify`) systemd sets
NOTIFY_SOCKET and counts the unit as started only once this is sent, so a
deploy waits for the signal rather than for a time window. Elsewhere
NOTIFY_SOCKET is unset and this does nothing. (Celery: call it from the
worker_ready signal.)
"""
import logging
import os
import socket


def notify_ready():
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(b"READY=1")
    except OSError as exc:  # systemd then never counts it started: the deploy says so
        logging.getLogger("ready").warning("could not tell systemd it is ready: %s", exc)
