"""A loopback (127.0.0.1) HTTP server for the tests of remote checkpoints:
nothing leaves the machine."""
import contextlib
import functools
import http.server
import threading


def send_body(handler, data: bytes,
              content_type: str = 'application/octet-stream',
              length: bool = True) -> None:
    """Answer ``handler``'s request with 200 and ``data`` (with a
    ``Content-Length`` header unless ``length`` is False)."""
    handler.send_response(200)
    handler.send_header('Content-Type', content_type)
    if length:
        handler.send_header('Content-Length', str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def serve_bytes(data: bytes):
    """A route that answers every request with ``data``."""
    return lambda handler, n: send_body(handler, data)


@contextlib.contextmanager
def loopback_server():
    """A threading HTTP/1.0 server on a free loopback port, shut down on
    exit: ``server.routes[path]`` is a function ``(handler, request number
    of that path, from 1) -> None`` that writes the response (404 for a
    path without one); ``server.url(path)`` is the path's URL."""
    routes, counts = {}, {}

    class Handler(http.server.BaseHTTPRequestHandler):

        def do_GET(self):
            counts[self.path] = counts.get(self.path, 0) + 1
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            try:
                route(self, counts[self.path])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.routes = routes
    httpd.url = functools.partial('http://127.0.0.1:{}{}'.format,
                                  httpd.server_address[1])
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
