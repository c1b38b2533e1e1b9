"""A throwaway PostgreSQL + pgvector server for the database gallery's tests.

Usage (scripts/with-postgres.sh does this):
    python scripts/pg_test_server.py start    # prints `export NAME=value` lines
    python scripts/pg_test_server.py stop DIR

The server binaries (PostgreSQL with pgvector) come from the PyPI wheel `pgserver`; this script
only uses its files: initdb, then pg_ctl on 127.0.0.1 with a free port and a temporary data
directory. PostgreSQL refuses to run as root, so under root it runs as the user `pgserver`
(created with useradd, as pgserver itself does). It writes DIR/pgctl, a script taking `start`
or `stop` (immediate), which the tests use to take the database away and bring it back.
"""
import os
import shlex
import socket
import subprocess
import sys
import tempfile


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start():
    from pgserver._commands import POSTGRES_BIN_PATH

    bin_dir = str(POSTGRES_BIN_PATH)
    data = tempfile.mkdtemp(prefix="proxima-pg-")
    as_user = []
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("pgserver")
        except KeyError:
            subprocess.run(["useradd", "-s", "/bin/sh", "pgserver"], check=True, capture_output=True)
        os.chmod(data, 0o777)
        # Every folder above the binaries must be traversable by that user.
        p = os.path.dirname(bin_dir)
        while p and p != "/":
            os.chmod(p, os.stat(p).st_mode | 0o055)
            p = os.path.dirname(p)
        as_user = ["runuser", "-u", "pgserver", "--"]
    pgdata = os.path.join(data, "db")
    subprocess.run(as_user + [os.path.join(bin_dir, "initdb"), "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    port = free_port()
    pg_ctl = shlex.join(as_user + [os.path.join(bin_dir, "pg_ctl"), "-D", pgdata])
    opts = shlex.quote(f"-h 127.0.0.1 -p {port} -k {data}")
    ctl = os.path.join(data, "pgctl")
    with open(ctl, "w") as f:
        f.write(f"""#!/bin/sh
# start | stop (immediate: as if the machine went away)
case "$1" in
  start) exec {pg_ctl} -w -t 60 -o {opts} -l {shlex.quote(os.path.join(data, 'log'))} start >/dev/null ;;
  stop) exec {pg_ctl} -w -m immediate stop >/dev/null ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
""")
    os.chmod(ctl, 0o755)
    subprocess.run([ctl, "start"], check=True)
    print(f"export PROXIMA_TEST_PG_URL={shlex.quote(f'postgres://postgres@127.0.0.1:{port}/postgres')}")
    print(f"export PROXIMA_TEST_PG_CTL={shlex.quote(ctl)}")
    print(f"export PROXIMA_TEST_PG_DIR={shlex.quote(data)}")


def stop(data):
    ctl = os.path.join(data, "pgctl")
    if os.path.exists(ctl):
        subprocess.run([ctl, "stop"], capture_output=True)
    subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        start()
    elif sys.argv[1:2] == ["stop"] and len(sys.argv) == 3:
        stop(sys.argv[2])
    else:
        sys.exit(__doc__)
