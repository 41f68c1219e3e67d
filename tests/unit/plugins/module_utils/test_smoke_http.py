# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""smoke.send_request against real loopback servers in this process: its own http.client
connections (resolve, SNI, Host, proxies, redirects, cookies) with nothing global patched, and
the standard URL options (basic auth, client certificates)."""

from __future__ import annotations

import base64
import gzip
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(COLLECTIONS):
    sys.path.insert(0, os.path.abspath(COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import SmokeOptionError  # noqa: E402

PUBLIC_HOST = 'release.example.test'  # .test never resolves: only connect_address reaches it
ORIGINAL_CREATE_CONNECTION = socket.create_connection
ORIGINAL_TLS_SOCKET_CLASS = ssl.SSLContext.sslsocket_class


class RecordingHandler(BaseHTTPRequestHandler):
    """Records what arrived (and the process's socket globals at that moment); answers by path."""

    protocol_version = 'HTTP/1.1'

    def handle_one(self):
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        self.server.seen.append(dict(
            method=self.command, path=self.path, host=self.headers.get('Host'), body=body,
            authorization=self.headers.get('Authorization'), cookie=self.headers.get('Cookie'),
            user_agent=self.headers.get('User-Agent'),
            # Read while the client is in the middle of its request, from another thread.
            globals_untouched=(socket.create_connection is ORIGINAL_CREATE_CONNECTION
                               and ssl.SSLContext.sslsocket_class is ORIGINAL_TLS_SOCKET_CLASS)))
        if self.server.credentials is not None and self.headers.get('Authorization') != self.server.credentials:
            self.reply(401, b'who are you?\n', {'WWW-Authenticate': 'Basic realm="smoke"'})
        elif self.path == '/set-cookie-and-redirect':
            self.reply(302, b'moved\n', {'Location': '/landing', 'Set-Cookie': 'stage=one; Path=/'})
        elif self.path == '/digest' and not (self.headers.get('Authorization') or '').startswith('Digest '):
            self.reply(401, b'digest only\n', {'WWW-Authenticate': 'Digest realm="smoke", nonce="n0nce", qop="auth"'})
        elif self.path == '/gzip':
            self.reply(200, gzip.compress(b'version=green\n' + b'x' * 100000), {'Content-Encoding': 'gzip'})
        elif self.path.startswith('/status/'):
            self.reply(int(self.path.rsplit('/', 1)[1]), b'status page\n', {'Location': '/landing'})
        else:
            self.reply(200, b'version=green\n')

    def reply(self, status, payload, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = handle_one

    def log_message(self, fmt, *args):
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls_context=None, credentials=None):
        super().__init__(('127.0.0.1', 0), RecordingHandler)
        self.seen = []
        self.snis = []
        self.credentials = credentials
        if tls_context is not None:
            tls_context.sni_callback = lambda sslsock, name, ctx: self.snis.append(name)
            self.socket = tls_context.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # refused TLS handshakes are expected in some tests


@pytest.fixture
def serve():
    servers = []

    def start(**kwargs):
        server = RecordingServer(**kwargs)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """A CA, a server certificate for PUBLIC_HOST and a client certificate, both signed by the CA."""
    openssl = shutil.which('openssl')
    if not openssl:
        pytest.fail('the openssl CLI is needed for test certificates')
    directory = tmp_path_factory.mktemp('pki')
    paths = dict((name, str(directory / name)) for name in (
        'ca.pem', 'ca.key', 'server.pem', 'server.key', 'server.csr', 'client.pem', 'client.key', 'client.csr',
        'other.pem', 'other.key', 'san.ext'))

    def run(*args):
        subprocess.run([openssl] + list(args), check=True, capture_output=True)

    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', paths['ca.key'],
        '-out', paths['ca.pem'], '-subj', '/CN=smoke test CA')
    with open(paths['san.ext'], 'w') as ext:
        ext.write('subjectAltName=DNS:%s\n' % PUBLIC_HOST)
    for name, subject in (('server', PUBLIC_HOST), ('client', 'release owner')):
        run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', paths[name + '.key'], '-out', paths[name + '.csr'],
            '-subj', '/CN=%s' % subject)
        run('x509', '-req', '-in', paths[name + '.csr'], '-CA', paths['ca.pem'], '-CAkey', paths['ca.key'],
            '-CAcreateserial', '-days', '2', '-out', paths[name + '.pem'], '-extfile', paths['san.ext'])
    # a self-signed client certificate the server's CA never signed
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', paths['other.key'],
        '-out', paths['other.pem'], '-subj', '/CN=stranger')
    return paths


def tls_server_context(pki, require_client_cert=False):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki['server.pem'], pki['server.key'])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki['ca.pem'])
    return context


def basic(username, password):
    return 'Basic ' + base64.b64encode(('%s:%s' % (username, password)).encode()).decode()


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch):
    for variable in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv('NETRC', os.devnull)


# ---------------------------------------------------------------- nothing global is patched

def test_no_socket_or_ssl_global_is_patched_while_a_request_runs(serve, pki):
    plain = serve()
    tls = serve(tls_context=tls_server_context(pki))
    result = smoke.send_request('http://%s/release' % PUBLIC_HOST, connect_address=('127.0.0.1', plain.port))
    assert result['matched'] is True, result
    result = smoke.send_request('https://%s/release' % PUBLIC_HOST, connect_address=('127.0.0.1', tls.port),
                                ca_path=pki['ca.pem'])
    assert result['matched'] is True, result
    # The servers' threads looked at the globals while each request was in flight.
    assert [seen['globals_untouched'] for seen in plain.seen + tls.seen] == [True, True]


def test_a_lazy_tls_context_is_built_by_the_first_https_request_only(serve, pki, monkeypatch):
    built = []
    real_build = smoke.build_tls_context

    def build(validate_certs=True, *args):
        built.append(validate_certs)
        return real_build(validate_certs, pki['ca.pem'])

    monkeypatch.setattr(smoke, 'build_tls_context', build)
    lazy = smoke.LazyTLSContext(validate_certs=True)
    plain, tls = serve(), serve(tls_context=tls_server_context(pki))
    for _attempt in range(2):
        result = smoke.send_request('http://%s/release' % PUBLIC_HOST, connect_address=('127.0.0.1', plain.port),
                                    tls_context=lazy)
        assert result['matched'] is True, result
    assert built == []  # plain http never reads the CA store
    for _attempt in range(2):
        result = smoke.send_request('https://%s/release' % PUBLIC_HOST, connect_address=('127.0.0.1', tls.port),
                                    tls_context=lazy)
        assert result['matched'] is True, result
    assert built == [True]  # once, then shared


def test_resolve_keeps_the_url_host_in_sni_host_and_certificate_check(serve, pki):
    tls = serve(tls_context=tls_server_context(pki))
    url = 'https://%s:%d/release' % (PUBLIC_HOST, tls.port)
    result = smoke.send_request(url, connect_address=('127.0.0.1', tls.port), ca_path=pki['ca.pem'])
    assert result['matched'] is True, result
    assert tls.snis == [PUBLIC_HOST]
    assert tls.seen[0]['host'] == '%s:%d' % (PUBLIC_HOST, tls.port)
    assert tls.seen[0]['user_agent'] == 'ansible-httpget'

    other = smoke.send_request('https://other.example.test/release', connect_address=('127.0.0.1', tls.port),
                               ca_path=pki['ca.pem'])
    assert other['error'].startswith('TLS certificate verification failed'), other
    assert 'other.example.test' in other['error']


def test_a_host_header_given_replaces_the_url_host_only_in_the_header(serve):
    server = serve()
    headers = {'host': PUBLIC_HOST, 'user-agent': 'probe/1'}
    result = smoke.send_request('http://127.0.0.1:%d/' % server.port, headers=headers)
    assert result['matched'] is True, result
    assert (server.seen[0]['host'], server.seen[0]['user_agent']) == (PUBLIC_HOST, 'probe/1')


# ---------------------------------------------------------------- redirects, cookies, proxies

def test_a_followed_redirect_carries_its_cookie_and_turns_a_post_into_a_get(serve):
    server = serve()
    result = smoke.send_request('http://%s/set-cookie-and-redirect' % PUBLIC_HOST, method='POST', data=b'a=1',
                                follow_redirects='all', connect_address=('127.0.0.1', server.port))
    assert result['matched'] is True, result
    first, second = server.seen
    assert (first['method'], first['body'], first['cookie']) == ('POST', b'a=1', None)
    assert (second['method'], second['path'], second['body']) == ('GET', '/landing', b'')
    assert second['cookie'] == 'stage=one'
    assert second['host'] == PUBLIC_HOST


@pytest.mark.parametrize('follow, method, status, followed', [
    ('none', 'GET', 302, False),
    ('safe', 'GET', 302, True),
    ('safe', 'POST', 302, False),   # safe follows GET and HEAD only
    ('all', 'POST', 307, True),
    ('all', 'GET', 300, False),     # not a redirect urllib follows
])
def test_redirects_follow_ansible_cores_rules(serve, follow, method, status, followed):
    server = serve()
    result = smoke.send_request('http://127.0.0.1:%d/status/%d' % (server.port, status), method=method,
                                data=b'x=1' if method == 'POST' else None, follow_redirects=follow,
                                status_codes=[200, status])
    assert result['status'] == (200 if followed else status), result
    assert len(server.seen) == (2 if followed else 1)
    if followed and status == 307:
        assert (server.seen[1]['method'], server.seen[1]['body']) == ('POST', b'x=1')


def test_a_proxy_from_the_environment_gets_the_absolute_url(serve, monkeypatch):
    proxy = serve()
    monkeypatch.setenv('http_proxy', 'http://user:pw@127.0.0.1:%d' % proxy.port)
    result = smoke.send_request('http://%s/release' % PUBLIC_HOST)
    assert result['matched'] is True, result
    assert proxy.seen[0]['path'] == 'http://%s/release' % PUBLIC_HOST
    assert proxy.seen[0]['host'] == PUBLIC_HOST
    # resolve (connect_address) and use_proxy=false go direct
    direct = serve()
    smoke.send_request('http://%s/release' % PUBLIC_HOST, connect_address=('127.0.0.1', direct.port))
    assert direct.seen[0]['path'] == '/release' and len(proxy.seen) == 1


class ConnectProxy(object):
    """An HTTPS proxy: answers CONNECT, then relays bytes both ways; records the CONNECT requests."""

    def __init__(self):
        self.requests = []
        self.headers = {}
        self.upstream_address, self.upstream_port = None, None
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client = self.sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self.tunnel, args=(client,), daemon=True).start()

    def tunnel(self, client):
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.decode().split('\r\n')
        self.requests.append(lines[0])
        self.headers = dict(line.split(': ', 1) for line in lines[1:] if ': ' in line)
        upstream = socket.create_connection((self.upstream_address, self.upstream_port))
        client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')

        def pipe(source, sink):
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def stop(self):
        self.sock.close()


def test_https_through_a_proxy_tunnels_with_connect_and_keeps_sni(serve, pki, monkeypatch):
    tls = serve(tls_context=tls_server_context(pki))
    proxy = ConnectProxy()
    proxy.upstream_address, proxy.upstream_port = '127.0.0.1', tls.port
    try:
        monkeypatch.setenv('https_proxy', 'http://user:pw@127.0.0.1:%d' % proxy.port)
        result = smoke.send_request('https://%s/release' % PUBLIC_HOST, ca_path=pki['ca.pem'])
        assert result['matched'] is True, result
        assert [line.rsplit('/', 1)[0] for line in proxy.requests] == ['CONNECT %s:443 HTTP' % PUBLIC_HOST]
        assert proxy.headers['Proxy-Authorization'] == basic('user', 'pw')
        assert tls.snis == [PUBLIC_HOST] and tls.seen[0]['host'] == PUBLIC_HOST
    finally:
        proxy.stop()


def test_a_gzip_body_is_decoded_and_capped_after_decoding(serve):
    server = serve()
    url = 'http://127.0.0.1:%d/gzip' % server.port
    whole = smoke.send_request(url, body_regex=re.compile('^version=green$', re.M))
    assert (whole['matched'], whole['body_truncated']) == (True, False), whole
    capped = smoke.send_request(url, body_regex=re.compile('^version=green$', re.M), max_body_bytes=1000)
    assert (capped['matched'], capped['body_truncated']) == (True, True), capped


# ---------------------------------------------------------------- the standard URL options

def test_force_basic_auth_sends_the_credentials_with_the_first_request(serve):
    server = serve(credentials=basic('owner', 's3cret'))
    result = smoke.send_request('http://127.0.0.1:%d/' % server.port, url_username='owner',
                                url_password='s3cret', force_basic_auth=True)
    assert result['matched'] is True, result
    assert [seen['authorization'] for seen in server.seen] == [basic('owner', 's3cret')]


def test_basic_auth_answers_the_servers_challenge(serve):
    server = serve(credentials=basic('owner', 's3cret'))
    result = smoke.send_request('http://127.0.0.1:%d/' % server.port, url_username='owner', url_password='s3cret')
    assert result['matched'] is True, result
    assert [seen['authorization'] for seen in server.seen] == [None, basic('owner', 's3cret')]

    wrong = smoke.send_request('http://127.0.0.1:%d/' % server.port, url_username='owner', url_password='nope')
    assert (wrong['status'], wrong['reason']) == (401, 'status 401 (expected 200)'), wrong
    anonymous = smoke.send_request('http://127.0.0.1:%d/' % server.port)
    assert anonymous['status'] == 401


def test_digest_auth_answers_the_servers_challenge(serve):
    server = serve()
    result = smoke.send_request('http://127.0.0.1:%d/digest' % server.port, url_username='owner',
                                url_password='s3cret')
    assert result['matched'] is True, result
    first, second = [seen['authorization'] for seen in server.seen]
    assert first is None
    assert second.startswith('Digest username="owner", realm="smoke", nonce="n0nce", uri="/digest", response="')


def test_credentials_in_the_url_are_used_and_not_sent_in_the_host(serve):
    server = serve(credentials=basic('owner', 'p@ss'))
    result = smoke.send_request('http://owner:p%%40ss@127.0.0.1:%d/' % server.port)
    assert result['matched'] is True, result
    assert server.seen[-1]['host'] == '127.0.0.1:%d' % server.port


def test_netrc_credentials_are_sent(serve, tmp_path, monkeypatch):
    server = serve(credentials=basic('robot', 'from-netrc'))
    netrc_file = tmp_path / 'netrc'
    netrc_file.write_text('machine 127.0.0.1 login robot password from-netrc\n')
    netrc_file.chmod(0o600)
    monkeypatch.setenv('NETRC', str(netrc_file))
    assert smoke.send_request('http://127.0.0.1:%d/' % server.port)['matched'] is True
    assert smoke.send_request('http://127.0.0.1:%d/' % server.port, use_netrc=False)['status'] == 401


def test_a_client_certificate_opens_a_listener_that_requires_one(serve, pki):
    server = serve(tls_context=tls_server_context(pki, require_client_cert=True))
    url = 'https://%s/release' % PUBLIC_HOST
    address = ('127.0.0.1', server.port)
    result = smoke.send_request(url, connect_address=address, ca_path=pki['ca.pem'],
                                client_cert=pki['client.pem'], client_key=pki['client.key'])
    assert result['matched'] is True, result
    # the same context, built once by the caller for many requests
    context = smoke.build_tls_context(True, pki['ca.pem'], pki['client.pem'], pki['client.key'])
    assert smoke.send_request(url, connect_address=address, tls_context=context)['matched'] is True

    without = smoke.send_request(url, connect_address=address, ca_path=pki['ca.pem'])
    stranger = smoke.send_request(url, connect_address=address, ca_path=pki['ca.pem'],
                                  client_cert=pki['other.pem'], client_key=pki['other.key'])
    for refused in (without, stranger):
        assert refused['matched'] is False and refused['status'] is None, refused
        assert refused['error'].startswith(('TLS error', 'connection reset', 'connection closed')), refused
    assert len(server.seen) == 2


def test_an_unusable_client_certificate_names_the_file(pki):
    with pytest.raises(SmokeOptionError, match="^client_cert '%s' with client_key '%s' could not be loaded"
                       % (pki['client.pem'], pki['other.key'])):
        smoke.build_tls_context(True, None, pki['client.pem'], pki['other.key'])
    with pytest.raises(SmokeOptionError, match="^ca_path '%s' could not be used" % pki['client.key']):
        smoke.build_tls_context(True, pki['client.key'])
