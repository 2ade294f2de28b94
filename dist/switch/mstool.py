# mstool: the Python the remote scripts run on a host (Python is on every
# target), for file-level work where shell tools differ between coreutils
# flavours (the atomic symlink switch) or would need many processes (manifest
# diffs). The scripts send it in a variable and run it with `python3 -I -c`
# (src/remote/pytool.ts): `mstool <command> ARGS...`. Standard library only.
# Every command starts a fresh interpreter, several per deploy: modules only
# some commands need are imported by them (http.client alone took 60 ms).
import json, os, re, stat, sys, time

def sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()

def link(*pairs):
    # TARGET PATH [TARGET PATH]...: each a rename(2) of a fresh link over the
    # old one: never a moment without the link.
    if not pairs or len(pairs) % 2:
        sys.exit('link: TARGET PATH pairs expected')
    for target, path in zip(pairs[::2], pairs[1::2]):
        tmp = '%s.tmp-%d' % (path, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)
        if os.readlink(path) != target:
            sys.exit('link %s does not point at %s after the switch' % (path, target))

def load_manifest(release):
    p = os.path.join(release, '.metalship', 'manifest.json')
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)

def manifest_path(path):
    # A path of the manifest, checked before it is joined to the release: never
    # absolute, never climbing, never into our own .metalship.
    parts = path.split('/') if isinstance(path, str) else ['']
    if path.startswith('/') or '\0' in path or parts[0] == '.metalship' or any(p in ('', '.', '..') for p in parts):
        sys.exit('refused manifest path %r' % (path,))
    return path

def stage_files(release, prev):
    manifest = json.load(sys.stdin)
    os.makedirs(os.path.join(release, '.metalship'), exist_ok=True)
    old = {}
    if prev and os.path.isdir(prev):
        pm = load_manifest(prev)
        if pm:
            old = {e[0]: e for e in pm['files']}
    need, reused = [], 0
    for path, digest, mode, size in manifest['files']:
        dst = os.path.join(release, manifest_path(path))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        o = old.get(path)
        src = os.path.join(prev, path) if prev else None
        if o and o[1] == digest and src and os.path.isfile(src) and not os.path.islink(src):
            import shutil
            shutil.copy2(src, dst)
            os.chmod(dst, int(mode, 8))
            reused += 1
        else:
            need.append(path)
    for path, target in manifest.get('links', []):
        dst = os.path.join(release, manifest_path(path))
        if not target or target.startswith('/'):
            sys.exit('refused link %r to %r: links stay inside the release' % (path, target))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.lexists(dst):
            os.unlink(dst)
        os.symlink(target, dst)
    with open(os.path.join(release, '.metalship', 'manifest.json'), 'w') as f:
        json.dump(manifest, f)
    print(json.dumps({'need': need, 'reused': reused}))

def open_in(release, path, flags, mode=0o600):
    # Opens release/path with every directory on the way opened without
    # following a link, so nothing in the path can lead out of the release.
    parts = path.split('/')
    fd = os.open(release, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
    finally:
        os.close(fd)

def refusal(member, entry):
    # Why an upload member is not what the runner sends for a manifest file, or None.
    import tarfile
    kinds = {tarfile.SYMTYPE: 'link', tarfile.LNKTYPE: 'hard link', tarfile.DIRTYPE: 'directory',
             tarfile.FIFOTYPE: 'FIFO', tarfile.CHRTYPE: 'device', tarfile.BLKTYPE: 'device'}
    if not member.isreg():
        return 'a %s' % kinds.get(member.type, 'special file')
    if entry is None:
        return 'not a file of the manifest'
    if member.mode != int(entry[2], 8):
        return "mode %o, not the manifest's %s" % (member.mode, entry[2])
    if member.size != entry[3]:
        return "not the manifest's size"
    return None

def receive_files(release, files):
    # The upload (a gzipped tar on stdin), unpacked here rather than by tar, which
    # would also create links, hard links, directories, devices, FIFOs and setuid
    # files: only regular files of the manifest that the release lacks, each
    # once, with the manifest's mode, size and sha256.
    import hashlib, tarfile, zlib
    count = 0
    try:
        with tarfile.open(fileobj=sys.stdin.buffer, mode='r|gz') as tar:
            for m in tar:
                e = files.get(m.name)
                why = refusal(m, e)
                if why:
                    sys.exit('refused upload member %r: %s' % (m.name, why))
                try:
                    fd = open_in(release, m.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    sys.exit('refused upload member %r: the release has it already (sent twice?)' % m.name)
                except OSError as err:  # ELOOP, ENOTDIR: a link or a file on its way
                    sys.exit('refused upload member %r: %s' % (m.name, err.strerror))
                h = hashlib.sha256()
                src = tar.extractfile(m)
                with os.fdopen(fd, 'wb') as out:
                    for chunk in iter(lambda: src.read(1 << 20), b''):
                        h.update(chunk)
                        out.write(chunk)
                    os.fchmod(out.fileno(), int(e[2], 8))
                    os.utime(out.fileno(), (m.mtime, m.mtime))
                if h.hexdigest() != e[1]:
                    os.unlink(os.path.join(release, m.name))
                    sys.exit('refused upload member %r: checksum mismatch' % m.name)
                count += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        sys.exit('the upload is not a complete gzipped tar of the release files: %s' % err)
    print('%d files received' % count)

def unlisted(release, manifest):
    # What the release holds that the manifest did not put there (before the
    # shared paths are linked), and any setuid or setgid bit.
    files = {e[0] for e in manifest['files']}
    links = {p: t for p, t in manifest.get('links', [])}
    dirs = {'.metalship'}
    for p in list(files) + list(links):
        while '/' in p:
            p = p.rsplit('/', 1)[0]
            dirs.add(p)
    bad = []
    for top, subdirs, names in os.walk(release):
        for name in subdirs + names:
            p = os.path.join(top, name)
            rel = os.path.relpath(p, release)
            if rel.startswith('.metalship/'):
                continue
            st = os.lstat(p)
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                bad.append('setuid/setgid %s' % rel)
            elif stat.S_ISLNK(st.st_mode):
                if links.get(rel) != os.readlink(p):
                    bad.append('unlisted link %s' % rel)
            elif stat.S_ISDIR(st.st_mode):
                if rel not in dirs:
                    bad.append('unlisted directory %s' % rel)
            elif not stat.S_ISREG(st.st_mode):
                bad.append('special file %s' % rel)
            elif rel not in files:
                bad.append('unlisted file %s' % rel)
    return bad

def check_files(release, *upload):
    manifest = load_manifest(release)
    files = {manifest_path(e[0]): e for e in manifest['files']}
    if upload:
        receive_files(release, files)
    bad = unlisted(release, manifest)
    for path, digest, mode, size in manifest['files']:
        p = os.path.join(release, path)
        if not os.path.isfile(p) or os.path.islink(p):
            bad.append('missing ' + path)
        elif sha256(p) != digest:
            bad.append('checksum mismatch ' + path)
        else:
            os.chmod(p, int(mode, 8))
    if bad:
        sys.exit('release %s is incomplete or holds what its manifest does not:\n%s' % (release, '\n'.join(bad[:20])))
    print('%d files verified' % len(manifest['files']))

def read_env(path):
    # The .env exactly as systemd reads it for the services (EnvironmentFile=,
    # parse_env_file in systemd's env-file.c): quotes, backslash escapes, quoted
    # values over several lines, comments; nothing expanded; the last wins.
    env = {}
    try:
        with open(path, encoding='utf-8', errors='surrogateescape') as f:
            text = f.read()
    except FileNotFoundError:
        return env
    ws, nl = ' \t\n\r', '\n\r'
    state, key, value, key_ws, value_ws = 'pre_key', [], [], None, None

    def push(trim_value):
        k = ''.join(key[:key_ws] if key_ws is not None else key)
        v = value[:value_ws] if trim_value and value_ws is not None else value
        if re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', k):
            env[k] = ''.join(v)

    for c in text:
        if state == 'pre_key':
            if c in '#;':
                state = 'comment'
            elif c not in ws:
                state, key, key_ws = 'key', [c], None
        elif state == 'key':
            if c in nl:
                state = 'pre_key'
            elif c == '=':
                state, value, value_ws = 'pre_value', [], None
            else:
                if c not in ws:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == 'pre_value':
            if c in nl:
                push(False)
                state = 'pre_key'
            elif c == "'":
                state = 'single'
            elif c == '"':
                state = 'double'
            elif c == '\\':
                state = 'value_escape'
            elif c not in ws:
                state = 'value'
                value.append(c)
        elif state == 'value':
            if c in nl:
                push(True)
                state = 'pre_key'
            elif c == '\\':
                state, value_ws = 'value_escape', None
            else:
                if c not in ws:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == 'value_escape':
            state = 'value'
            if c not in nl:
                value.append(c)
        elif state == 'single':
            if c == "'":
                state = 'pre_value'
            else:
                value.append(c)
        elif state == 'double':
            if c == '"':
                state = 'pre_value'
            elif c == '\\':
                state = 'double_escape'
            else:
                value.append(c)
        elif state == 'double_escape':
            state = 'double'
            if c in '"\\$`':  # the characters a shell needs escaped
                value.append(c)
            elif c != '\n':
                value.extend(['\\', c])
        elif state == 'comment':
            if c == '\\':
                state = 'comment_escape'
            elif c in nl:
                state = 'pre_key'
        elif state == 'comment_escape':
            state = 'comment'
    if state in ('pre_value', 'value', 'value_escape', 'single', 'double', 'double_escape'):
        push(state == 'value')
    return env

def import_check(release, module, envfile):
    # Import the app the way its service will: from the release, with the .env values.
    os.environ.update(read_env(envfile))
    os.chdir(release)
    sys.path.insert(0, release)
    import importlib
    mod, _, attr = module.partition(':')
    m = importlib.import_module(mod)
    obj = m
    for part in attr.split('.'):
        if part:
            obj = getattr(obj, part)
    print('import ok: %s' % module)

def exec_in_release(release, envfile, *command):
    # Run a command the way the services run: in the release, with the .env values
    # and the release's virtualenv first on PATH. exec keeps it in our session, so
    # a timeout can stop it.
    os.environ.update(read_env(envfile))
    os.environ['PATH'] = os.path.join(release, '.venv', 'bin') + os.pathsep + os.environ.get('PATH', '/usr/bin:/bin')
    os.environ['PYTHONUNBUFFERED'] = '1'
    os.chdir(release)
    try:
        os.execvpe(command[0], list(command), os.environ)
    except FileNotFoundError:
        sys.exit("%s: no such command in the release's virtualenv (%s) or on PATH" % (command[0], os.path.join(release, '.venv', 'bin')))

def http_target(target, timeout, name):
    # A Unix socket path, an address[:port], or https://address[:port] (TLS with
    # the site's name as SNI; the certificate is not what is checked).
    import socket
    if target.startswith('/'):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(target)
        return s
    tls = target.startswith('https://')
    host, _, port = (target[len('https://'):] if tls else target).partition(':')
    s = socket.create_connection((host, int(port or (443 if tls else 80))), timeout)
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=name)
    return s

def probe(target, path, timeout=5, name='localhost'):
    # HTTP/1.0 on a plain socket (no http.client: see the imports): the server
    # answers without chunked encoding and closes; the first 4096 bytes of the
    # body are enough to check.
    try:
        request = ('GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: metalship-health\r\nConnection: close\r\n\r\n' % (path, name)).encode('ascii')
        if any(c in path + name for c in '\r\n '):
            raise ValueError('a path or name with spaces or line breaks')
        # One deadline for the whole answer, and a bound on its size: a server
        # trickling bytes, or headers without end, gets no more than that.
        deadline = time.monotonic() + timeout
        with http_target(target, timeout, name) as s:
            s.sendall(request)
            data = b''
            while len(data) < 65536:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(65536)
                data += chunk
                head, sep, body = data.partition(b'\r\n\r\n')
                if not chunk:
                    break
                if sep:
                    length = re.search(rb'(?im)^content-length:[ \t]*([0-9]+)[ \t]*\r?$', head)
                    if len(body) >= min(4096, int(length.group(1)) if length else 4096):
                        break
        if not sep:
            raise ValueError('no complete HTTP answer (%d bytes)' % len(data))
        status = re.match(rb'HTTP/1\.[01] ([0-9]{3})[ \r]', head + b'\r')
        if not status:
            raise ValueError('not an HTTP answer: %r' % head[:60])
        return int(status.group(1)), body[:4096].decode('utf-8', 'replace')
    except Exception as e:
        return 0, '%s: %s' % (type(e).__name__, e)

def wait_ready(target, path, timeout, interval, status, expect, name='localhost'):
    deadline = time.monotonic() + float(timeout)
    attempts = 0
    start = time.monotonic()
    while True:
        attempts += 1
        code, body = probe(target, path, name=name)
        ok = code == int(status) and (expect in body)
        if ok or time.monotonic() >= deadline:
            print(json.dumps({'ok': ok, 'attempts': attempts, 'status': code, 'body': body[:500],
                              'seconds': round(time.monotonic() - start, 3)}))
            sys.exit(0 if ok else 1)
        time.sleep(float(interval))

def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except Exception:
        return ''

def releases(root):
    out = []
    rdir = os.path.join(root, 'releases')
    links = {}
    for name in ['current', 'slots/blue', 'slots/green']:
        p = os.path.join(root, name)
        if os.path.islink(p):
            links[name] = os.path.basename(os.readlink(p).rstrip('/'))
    if os.path.isdir(rdir):
        for name in os.listdir(rdir):
            p = os.path.join(rdir, name)
            if not os.path.isdir(p) or os.path.islink(p):
                continue
            meta = {}
            try:
                with open(os.path.join(p, '.metalship', 'release.json')) as f:
                    meta = json.load(f)
            except Exception:
                pass
            try:
                with open(os.path.join(p, '.metalship', 'status')) as f:
                    status = f.read().strip()
            except Exception:
                status = 'incomplete'
            try:
                created = os.stat(os.path.join(p, '.metalship')).st_mtime if not meta.get('created_epoch') else meta['created_epoch']
            except Exception:
                created = 0
            venv = os.readlink(os.path.join(p, '.venv')) if os.path.islink(os.path.join(p, '.venv')) else ''
            out.append({'id': name, 'status': status, 'created': created, 'venv': os.path.basename(venv),
                        'revision': meta.get('revision', ''), 'schema_revision': read_text(os.path.join(p, '.metalship', 'schema-revision')),
                        # served: it was current once (a release made before releases recorded their settings counts as served)
                        'served': os.path.isfile(os.path.join(p, '.metalship', 'served')) or not os.path.isfile(os.path.join(p, '.metalship', 'runtime.json'))})
    venvs = sorted(os.listdir(os.path.join(root, 'venvs'))) if os.path.isdir(os.path.join(root, 'venvs')) else []
    print(json.dumps({'releases': out, 'links': links, 'venvs': venvs}))

# libpq's connection keywords and the environment variables that carry them,
# so a database URL never goes on a command line (ps shows those to every user).
PG_ENV = {'host': 'PGHOST', 'hostaddr': 'PGHOSTADDR', 'port': 'PGPORT', 'dbname': 'PGDATABASE', 'user': 'PGUSER',
          'password': 'PGPASSWORD', 'passfile': 'PGPASSFILE', 'channel_binding': 'PGCHANNELBINDING',
          'service': 'PGSERVICE', 'options': 'PGOPTIONS', 'application_name': 'PGAPPNAME', 'sslmode': 'PGSSLMODE',
          'requiressl': 'PGREQUIRESSL', 'sslcompression': 'PGSSLCOMPRESSION', 'sslcert': 'PGSSLCERT',
          'sslkey': 'PGSSLKEY', 'sslrootcert': 'PGSSLROOTCERT', 'sslcrl': 'PGSSLCRL', 'sslcrldir': 'PGSSLCRLDIR',
          'sslsni': 'PGSSLSNI', 'requirepeer': 'PGREQUIREPEER', 'ssl_min_protocol_version': 'PGSSLMINPROTOCOLVERSION',
          'ssl_max_protocol_version': 'PGSSLMAXPROTOCOLVERSION', 'gssencmode': 'PGGSSENCMODE',
          'krbsrvname': 'PGKRBSRVNAME', 'gsslib': 'PGGSSLIB', 'connect_timeout': 'PGCONNECT_TIMEOUT',
          'client_encoding': 'PGCLIENTENCODING', 'target_session_attrs': 'PGTARGETSESSIONATTRS',
          'load_balance_hosts': 'PGLOADBALANCEHOSTS'}
# asyncpg's ssl= means what libpq's sslmode= does.
SSL_VALUES = {'true': 'require', 'false': 'disable', 'disable': 'disable', 'allow': 'allow', 'prefer': 'prefer',
              'require': 'require', 'verify-ca': 'verify-ca', 'verify-full': 'verify-full'}

def pg_keywords(dsn):
    # A libpq keyword/value connection string (host=db user=shop password='a b'),
    # split as libpq's conninfo_parse does: pairs separated by whitespace, spaces
    # allowed around =, a value in single quotes or ending at whitespace, a
    # backslash taking the next character literally. Messages never quote it.
    pairs, i, n = [], 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            return pairs
        start = i
        while i < n and not dsn[i].isspace() and dsn[i] != '=':
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != '=':
            sys.exit('DATABASE_URL is neither a postgresql:// URL nor libpq keyword=value pairs (a keyword without =)')
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value, quoted = [], i < n and dsn[i] == "'"
        if quoted:
            i += 1
        while True:
            if i >= n:
                if quoted:
                    sys.exit('DATABASE_URL: a quoted value of its keyword=value pairs is never closed')
                break
            c = dsn[i]
            if c == '\\' and i + 1 < n:
                value.append(dsn[i + 1])
                i += 2
                continue
            if (quoted and c == "'") or (not quoted and c.isspace()):
                i += 1
                break
            value.append(c)
            i += 1
        pairs.append((key, ''.join(value)))

def pg_environment(url):
    # A libpq URI (postgresql://user:pass@host:port,host2/db?k=v, SQLAlchemy's
    # +driver allowed) or keyword/value string (host=... password=...) as PG*
    # variables, split the way libpq splits it; returns them and the texts to
    # mask. Messages never quote the URL: it holds a password.
    from urllib.parse import unquote, parse_qsl
    if '://' not in url and '=' in url:
        return pg_parameters(pg_keywords(url), {}, [])
    scheme, sep, rest = url.partition('://')
    if not sep or scheme.split('+')[0] not in ('postgres', 'postgresql'):
        sys.exit('DATABASE_URL is not a postgresql:// URL')
    # libpq: the user information ends at the first @ before the first /. An @
    # after it means a / or @ left unencoded in the password: libpq would read
    # a piece of it as a host, port or database name, and print it.
    first_slash = rest.find('/')
    end = first_slash if first_slash >= 0 else len(rest)
    at = rest.find('@', 0, end)
    if '@' in rest[end:].partition('?')[0]:
        sys.exit('DATABASE_URL has an @ after its first /: percent-encode / and @ in its user name and password (%2F, %40)')
    userinfo, rest = (rest[:at], rest[at + 1:]) if at >= 0 else ('', rest)
    hostlist = re.match(r'[^/?]*', rest).group(0)
    path, _, query = rest[len(hostlist):].lstrip('/').partition('?')
    env, secrets = {}, []
    if userinfo:
        user, colon, password = userinfo.partition(':')
        if user:
            env['PGUSER'] = unquote(user)
        if colon:
            env['PGPASSWORD'] = unquote(password)
            secrets += [password, unquote(password)]
    hosts, ports = [], []
    for item in hostlist.split(',') if hostlist else []:
        if item.startswith('['):
            host, _, port = item[1:].partition(']')
            port = port[1:]
        else:
            host, _, port = item.partition(':')
        hosts.append(unquote(host))
        ports.append(port)
    if any(hosts):
        env['PGHOST'] = ','.join(hosts)
    if any(ports):
        env['PGPORT'] = ','.join(p or '5432' for p in ports)
    if path:
        env['PGDATABASE'] = unquote(path)
    return pg_parameters(parse_qsl(query, keep_blank_values=True), env, secrets)

def pg_parameters(pairs, env, secrets):
    # A URL's ?k=v parameters or a keyword string's pairs, on top of env: the
    # same keywords either way (a later one wins, as in libpq).
    ignored = 0
    for key, value in pairs:
        if key == 'ssl':
            if value.lower() not in SSL_VALUES:
                sys.exit('DATABASE_URL: its ssl= parameter has a value libpq does not know')
            env['PGSSLMODE'] = SSL_VALUES[value.lower()]
        elif key in PG_ENV:
            env[PG_ENV[key]] = value
            if key in ('password', 'sslpassword'):
                secrets.append(value)
        else:
            ignored += 1
    if ignored:
        print('note: DATABASE_URL has %d parameter(s) that psql and pg_dump do not know; they ignore them' % ignored, file=sys.stderr)
    return env, [t for t in secrets if len(t) >= 3]

def pg_exec(envfile, *command):
    # Runs a libpq client (psql, pg_dump) against the app's DATABASE_URL, read
    # from its .env by the caller (the app user), passed in the environment. Its
    # messages pass through here, with the password masked.
    import subprocess
    url = read_env(envfile).get('DATABASE_URL', '')
    if not url:
        sys.exit('DATABASE_URL is not set in %s' % envfile)
    env, secrets = pg_environment(url)
    os.environ.update(env)
    child = subprocess.Popen(list(command), stderr=subprocess.PIPE)
    masks = sorted({t.encode() for t in secrets}, key=len, reverse=True)
    for line in child.stderr:
        for m in masks:
            line = line.replace(m, b'***')
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
    sys.exit(child.wait())

def logins(env):
    # The database and Redis logins an environment holds, as its clients read
    # them: libpq (a URL's user and password, its ?user= and ?password=, or a
    # keyword string's user= and password=; else
    # PGUSER and PGPASSWORD, else the OS user) and redis-py (user:password@,
    # else ?username= and ?password=; no user is Redis's default user).
    from urllib.parse import urlsplit, unquote, parse_qs
    found = []
    url = env.get('DATABASE_URL', '')
    pg = {}
    if url:
        try:
            pg, _ = pg_environment(url)
        except SystemExit:
            pg = {}
    password = pg.get('PGPASSWORD', env.get('PGPASSWORD'))
    if password:
        import pwd
        user = pg.get('PGUSER') or env.get('PGUSER') or pwd.getpwuid(os.getuid()).pw_name
        found.append(('DATABASE_URL', user, password))
    url = env.get('REDIS_URL', '')
    if url:
        try:
            u = urlsplit(url)
            query = parse_qs(u.query)
            user = unquote(u.username) if u.username else (query.get('username') or [''])[-1]
            password = unquote(u.password) if u.password is not None else (query.get('password') or [None])[-1]
        except ValueError:
            password = None
        if password:
            found.append(('REDIS_URL', user or 'default', password))
    return found

def in_use(*sources):
    # What the app's services log in with, from triples `env <pid> <label>` (a
    # running process's environment) and `file <path> <label>` (an env file as
    # systemd reads it: a unit restarting, or a process that rewrote its own
    # environment, still starts from it). Prints `<variable> <user %-encoded>
    # <sha256 of the password> <label>`, never a password.
    import hashlib
    from urllib.parse import quote
    seen = set()
    for i in range(0, len(sources) - 2, 3):
        kind, where, label = sources[i:i + 3]
        if kind == 'env':
            try:
                with open('/proc/%s/environ' % where, 'rb') as f:
                    items = f.read().split(b'\0')
            except OSError:
                continue
            env = {}
            for item in items:
                key, sep, value = item.partition(b'=')
                if sep:
                    env[key.decode('utf-8', 'replace')] = value.decode('utf-8', 'replace')
        elif os.path.isfile(where):
            env = read_env(where)
        else:
            continue
        for variable, user, password in logins(env):
            line = (variable, quote(user, safe='') or '-', hashlib.sha256(password.encode()).hexdigest(), label)
            if line not in seen:
                seen.add(line)
                print(*line)

def stop_user(name):
    # Every process of a user stopped: kill(-1) sent as that user (it reaches
    # exactly that user's processes), until /proc shows none left alive.
    import pwd, signal
    uid = pwd.getpwnam(name).pw_uid
    if uid == 0:
        sys.exit('refusing to stop the processes of root')
    def alive():
        left = []
        for p in os.listdir('/proc'):
            try:
                if p.isdigit() and os.stat('/proc/' + p).st_uid == uid:
                    with open('/proc/%s/stat' % p) as f:
                        if f.read().rpartition(')')[2].split()[0] != 'Z':
                            left.append(p)
            except OSError:
                pass
        return left
    for _ in range(50):
        child = os.fork()
        if child == 0:
            try:
                os.setgid(pwd.getpwnam(name).pw_gid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            os._exit(0)
        os.waitpid(child, 0)
        left = alive()
        if not left:
            return
        time.sleep(0.1)
    sys.exit('processes of %s keep running: %s' % (name, ' '.join(left[:10])))

def root_only(path):
    # Nothing on the way to path (resolved), nor path itself, can be changed by
    # anyone but root: each is root's and writable by root alone. A missing
    # part is fine when what holds it passes (only root could make it).
    parts = [p for p in os.path.realpath(path).split('/') if p]
    for n in range(len(parts) + 1):
        try:
            st = os.stat('/' + '/'.join(parts[:n]))
        except FileNotFoundError:
            return True
        if st.st_uid != 0 or st.st_mode & 0o022:
            return False
    return True

def check_sealed(venv):
    # A sealed venv leads nowhere another user could change: no link, and no
    # path line of a .pth file (Python adds those to sys.path), points there.
    bad = []
    for top, dirs, files in os.walk(venv):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            if st.st_uid != 0 or (st.st_mode & 0o022 and not os.path.islink(p)) or st.st_mode & 0o6000:
                bad.append('%s is not sealed (owner %d, mode %o)' % (p, st.st_uid, st.st_mode & 0o7777))
            elif os.path.islink(p) and not root_only(p):
                bad.append('%s leads to %s' % (p, os.path.realpath(p)))
            elif name.endswith('.pth') and os.path.islink(p):
                # Python reads what it leads to; root does not (its text could be anything).
                bad.append('%s is a link: a .pth file must be a file of the venv' % p)
            elif name.endswith('.pth') and os.path.isfile(p):
                with open(p, encoding='utf-8', errors='replace') as f:
                    for line in f:
                        line = line.strip()
                        if line and not line.startswith(('#', 'import ', 'import\t')):
                            target = os.path.join(top, line)
                            if not root_only(target):
                                bad.append('%s adds %s to the path' % (p, os.path.realpath(target)))
    if bad:
        sys.exit('the virtualenv leads to places another user could change (a package put them there):\n' + '\n'.join(bad[:20]))

def pip_runner(cache, *flags):
    # pip for building a venv made without one (python -m venv --without-pip):
    # ensurepip copying pip into each new venv took 2 s of a cold deploy, and
    # pip run from its wheel compiles its modules on every start (1 s). So the
    # wheel ensurepip would use (the interpreter's own _bundled one, else
    # Debian's in /usr/share/python-wheels) is unpacked once per interpreter
    # and wheel content (an update Debian ships under the same file name is a
    # new one), root's and byte-compiled, and run as `python DIR/pip`. Only
    # pip/ is unpacked: no dist-info, so the venv's pip sees no pip installed
    # there. Prints DIR, or nothing when there is no wheel root alone could
    # have put there (the venv then gets ensurepip's pip); then, before Python
    # 3.12, the other wheels ensurepip installed beside pip's: setuptools (and
    # Debian 11's pkg_resources, a wheel of its own), but for a venv with the
    # system's site-packages (flag system-site) those the system has: this
    # interpreter, as root and isolated, sees what that venv will (locating a
    # module runs none of its code).
    import compileall, importlib.util, fcntl, glob, hashlib, shutil, tempfile, zipfile
    dirs = []
    try:
        import ensurepip
        dirs.append(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'))
    except ImportError:
        pass
    dirs.append('/usr/share/python-wheels')
    def version(path, project='pip'):
        m = re.match(project + r'-([0-9.]+)-', os.path.basename(path))
        return tuple(int(x) for x in m.group(1).split('.') if x) if m else ()
    def usable(d, project):
        found = [w for w in glob.glob(os.path.join(d, project + '-*.whl')) if version(w, project) and root_only(w) and os.path.isfile(w)]
        return max(found, key=lambda w: version(w, project)) if found else None
    wheel = next((w for w in (usable(d, 'pip') for d in dirs) if w), None)
    if not wheel:
        return
    with open(wheel, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    name = '%s-%s-%s' % (sys.implementation.cache_tag, os.path.basename(wheel)[:-len('.whl')], digest)
    if not root_only(cache):
        sys.exit('%s is not root\'s alone' % cache)
    os.makedirs(cache, mode=0o755, exist_ok=True)
    final = os.path.join(cache, name)
    complete = lambda: os.path.isfile(os.path.join(final, '.complete'))
    def done():
        print(final)
        if sys.version_info < (3, 12):
            for project in ('setuptools', 'pkg_resources'):
                if 'system-site' in flags and importlib.util.find_spec(project) is not None:
                    continue
                extra = usable(os.path.dirname(wheel), project)
                if extra:
                    print(extra)
    if complete():
        return done()
    # One build at a time on the host: whatever else is here unfinished was
    # left by a run cut short, and goes (a complete one is never removed: a
    # build may be running pip from it).
    with open(os.path.join(cache, '.lock'), 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return done()
        for left in glob.glob(os.path.join(cache, '.tmp-*')):
            shutil.rmtree(left, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp = tempfile.mkdtemp(dir=cache, prefix='.tmp-')
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp, [m for m in z.namelist() if m.startswith('pip/')])
            compileall.compile_dir(os.path.join(tmp, 'pip'), quiet=1, workers=0)
            for top, ds, fs in os.walk(tmp):
                for n in ds:
                    os.chmod(os.path.join(top, n), 0o755)
                for n in fs:
                    os.chmod(os.path.join(top, n), 0o644)
            os.chmod(tmp, 0o755)
            open(os.path.join(tmp, '.complete'), 'w').close()
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    done()

cmd, args = sys.argv[1], sys.argv[2:]
{'link': link, 'stage-files': stage_files, 'check-files': check_files, 'import-check': import_check,
 'wait-ready': wait_ready, 'releases': releases, 'exec': exec_in_release, 'pg-exec': pg_exec, 'stop-user': stop_user, 'check-sealed': check_sealed,
 'in-use': in_use, 'pip-runner': pip_runner}[cmd](*args)
