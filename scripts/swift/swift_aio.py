#!/usr/bin/python3
# Helper for scripts/swift/swift-aio.sh (run with Debian's /usr/bin/python3, which has the swift modules).
#   swift_aio.py ports N               print N free TCP ports on 127.0.0.1, one per line
#   swift_aio.py rings DIR A C O       write account/container/object rings (1 replica, device d1) into DIR
#   swift_aio.py wait SECONDS URL...   wait until every URL answers GET with 2xx
#   swift_aio.py auth URL USER KEY     tempauth login; prints the storage URL (exit 1 on failure)
#   swift_aio.py serve SERVER CONF     run one Swift WSGI server (proxy-server, account-server, ...) in the
#                                      foreground, reading swift.conf from $COUCHTROVE_SWIFT_CONF
# Why a launcher: Swift reads swift.conf (hash prefix/suffix, policies, [swift-constraints]) from the
# hard-coded /etc/swift/swift.conf when its modules load; swift_dir only moves the rings. Setting
# utils.SWIFT_CONF_FILE and reloading constraints and policies first gives each test server its own
# swift.conf (e.g. a small max_file_size) without touching /etc.
import os
import socket
import sys


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rings(directory, account_port, container_port, object_port):
    from swift.common.ring import RingBuilder
    for name, port in (('account', account_port), ('container', container_port), ('object', object_port)):
        b = RingBuilder(6, 1, 1)
        b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port),
                   'device': 'd1', 'weight': 100, 'meta': ''})
        b.rebalance()
        b.save(os.path.join(directory, name + '.builder'))
        b.get_ring().save(os.path.join(directory, name + '.ring.gz'))


def wait(seconds, urls):
    import time
    import urllib.request
    deadline = time.time() + float(seconds)
    pending = list(urls)
    while pending:
        try:
            with urllib.request.urlopen(pending[0], timeout=2) as r:
                if 200 <= r.status < 300:
                    pending.pop(0)
                    continue
        except Exception:
            pass
        if time.time() > deadline:
            sys.exit('not ready after %ss: %s' % (seconds, pending[0]))
        time.sleep(0.1)


def auth(url, user, key):
    import urllib.request
    req = urllib.request.Request(url, headers={'X-Auth-User': user, 'X-Auth-Key': key})
    with urllib.request.urlopen(req, timeout=5) as r:
        storage = r.headers['X-Storage-Url']
        token = r.headers['X-Auth-Token']
    req = urllib.request.Request(storage, method='HEAD', headers={'X-Auth-Token': token})
    with urllib.request.urlopen(req, timeout=5) as r:
        if not 200 <= r.status < 300:
            sys.exit('HEAD account: %s' % r.status)
    print(storage)


def serve(server, conf):
    import swift.common.utils as utils
    utils.SWIFT_CONF_FILE = os.environ['COUCHTROVE_SWIFT_CONF']
    utils.HASH_PATH_PREFIX = b''
    utils.HASH_PATH_SUFFIX = b''
    utils.validate_configuration()
    from swift.common import constraints
    constraints.reload_constraints()
    from swift.common.storage_policy import reload_storage_policies
    reload_storage_policies()
    from swift.common.wsgi import run_wsgi
    return run_wsgi(conf, server, verbose=True)


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'ports':
        print('\n'.join(str(p) for p in free_ports(int(sys.argv[2]))))
    elif cmd == 'rings':
        rings(*sys.argv[2:6])
    elif cmd == 'wait':
        wait(sys.argv[2], sys.argv[3:])
    elif cmd == 'auth':
        try:
            auth(*sys.argv[2:5])
        except Exception as e:  # noqa: BLE001 - one line for the shell script
            sys.exit('auth failed: %s' % e)
    elif cmd == 'serve':
        sys.exit(serve(sys.argv[2], sys.argv[3]))
    else:
        sys.exit('unknown command %s' % cmd)
