# The backup receiver's check of a pushed manifest (src/remote/sh/backup-receive.sh;
# run there with python3 -I). The manifest's line on stdin; argv: the database,
# the copy's name (<db>_<stamp>_daily), the clock skew allowed ahead (s) and
# the age a push may have (s). Prints "size sha256". Exit 1: the line is not a
# manifest backup.sh writes for this name (exact keys and types, created equal to
# the stamp); exit 2: the stamp is not a real UTC time within the window. A push
# key holder can still send a self-consistent copy: it can never be dated
# outside the last day, so it neither outlives retention nor stays the newest.
import calendar
import json
import re
import sys
import time

KEYS = {'database', 'created', 'label', 'file', 'size', 'sha256', 'pg_version', 'tables'}


def fail(code, why):
    print(why)
    sys.exit(code)


def pairs(items):
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError('a key appears twice')
    return dict(items)


def constant(name):
    raise ValueError(name + ' is not a number')


def main():
    db, base, skew, window = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    stamp = base[len(db) + 1:len(db) + 17]
    try:
        when = calendar.timegm(time.strptime(stamp, '%Y%m%dT%H%M%SZ'))
    except ValueError:
        when = None
    if when is None or time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(when)) != stamp:
        fail(2, 'its stamp %s is not a real UTC time' % stamp)
    age = int(time.time()) - when
    if age < -skew:
        fail(2, 'its stamp %s is %d s ahead of this host\'s clock' % (stamp, -age))
    if age > window:
        fail(2, 'its stamp %s is %d s old: only a backup of the last %d s is taken' % (stamp, age, window))
    try:
        m = json.loads(sys.stdin.read(), object_pairs_hook=pairs, parse_constant=constant)
    except ValueError as e:
        fail(1, 'not JSON (%s)' % e)
    if not isinstance(m, dict) or set(m) != KEYS:
        fail(1, 'not the keys of a manifest (%s)' % ', '.join(sorted(KEYS)))

    def whole(v, top):
        return type(v) is int and 0 <= v < top

    tables = m['tables']
    problems = [
        name
        for name, good in (
            ('database', m['database'] == db),
            ('created', m['created'] == time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(when))),
            ('label', m['label'] == 'daily'),
            ('file', m['file'] == base + '.dump'),
            ('size', whole(m['size'], 10 ** 15) and m['size'] > 0),
            ('sha256', isinstance(m['sha256'], str) and re.fullmatch('[0-9a-f]{64}', m['sha256']) is not None),
            ('pg_version', isinstance(m['pg_version'], str) and 0 < len(m['pg_version']) <= 200),
            (
                'tables',
                isinstance(tables, dict)
                and all(isinstance(k, str) and whole(v, 10 ** 18) for k, v in tables.items()),
            ),
        )
        if not good
    ]
    if problems:
        fail(1, 'not what backup.sh writes for %s: %s' % (base, ', '.join(problems)))
    print(m['size'], m['sha256'])


main()
