// The host's Python tool run here the way the scripts run it (python3 -I), on
// its own file: src/remote/py/mstool.py.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const MSTOOL = fileURLToPath(new URL('../../src/remote/py/mstool.py', import.meta.url));

export function mstool(
  args: string[],
  opts: { input?: Buffer | string; env?: Record<string, string> } = {},
): SpawnSyncReturns<string> {
  return spawnSync('python3', ['-I', MSTOOL, ...args], {
    input: opts.input,
    encoding: 'utf8',
    env: opts.env ?? { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
}

/**
 * A tiny HTTP server on the Unix socket named by its argument, as a Python
 * program: 200 "ready v1" at /health, 503 "starting" elsewhere.
 */
export const UNIX_HTTP_SERVER = `
import http.server, socketserver, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == '/health'
        body = b'ready v1' if ok else b'starting'
        self.send_response(200 if ok else 503)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ('local', 0)
server = Server(sys.argv[1], Handler)
print('listening', flush=True)
server.serve_forever()
`;
